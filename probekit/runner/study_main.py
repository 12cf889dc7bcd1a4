"""The command line of a study runner: ``python -m probekit.runner.<study> CONFIG`` runs the study of an experiment
config alone and writes ``<results_dir>/<name>/<study>/results.csv`` and its ``figures/``.

The structural probes (:mod:`probekit.runner.structural`), the pair and span probes (:mod:`probekit.runner.relations`)
and the neuron analysis (:mod:`probekit.runner.neurons`) share it; ``probekit run`` runs the same studies inside the whole experiment.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Callable

from probekit.results.table import to_frames, write_csv


def study_main(argv: list[str] | None, *, study: str, load: Callable, run: Callable, figures: Callable) -> int:
    """``load(path) -> (cfg, settings)``, ``run(cfg, settings) -> result with .rows``, ``figures(result, folder,
    formats=...) -> paths``; returns the exit status (2: wrong arguments)."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(f"usage: python -m probekit.runner.{study} CONFIG.yaml", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    cfg, settings = load(argv[0])
    res = run(cfg, settings)
    df, _ = to_frames(res.rows)
    out = Path(cfg.results_dir) / cfg.name / study / "results.csv"
    write_csv(df, out)
    figs = figures(res, out.parent / "figures", formats=cfg.figures)
    print(f"wrote {out} ({len(df)} rows) and {len(figs)} figure files")
    return 0
