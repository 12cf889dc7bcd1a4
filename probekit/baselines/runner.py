"""Run the baselines section of an experiment config (YAML) and summarise the results.

Usage::

    python -m probekit.baselines configs/baselines.yaml --results-dir results/baselines

The config is an ordinary experiment config (:class:`probekit.config.ExperimentConfig`); this runner
uses ``name``, ``models``, ``dataset``/``splits``/``files``/``data_dir``, ``limit``, ``tasks``, ``seeds``,
``device`` and the ``baselines`` section (probe settings are ignored here). Finished runs are kept under ``<results-dir>/runs/`` and skipped when the command is
run again; all rows are also written to ``<results-dir>/baseline_rows.csv``.
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from probekit.baselines.config import BaselineConfig
from probekit.baselines.train import run_baselines
from probekit.config import ExperimentConfig
from probekit.errors import ConfigError, ProbekitError
from probekit.results.table import write_csv
from probekit.runner.data import load_data as _load

log = logging.getLogger(__name__)


def run_config(path_or_dict, *, results_dir: str | Path | None = None, device: str | None = None) -> list[dict]:
    """Run every baseline of an experiment config (YAML path, mapping or ``ExperimentConfig``).

    Data are loaded like the probes' (dataset, splits, files, limit: :func:`load_data`). Rows are returned and written to ``<results_dir>/baseline_rows.csv``; the
    default ``results_dir`` is ``<config.results_dir>/<config.name>/baselines``.
    """

    if isinstance(path_or_dict, ExperimentConfig):
        exp = path_or_dict
    elif isinstance(path_or_dict, dict):
        exp = ExperimentConfig.from_dict(path_or_dict)
    else:
        exp = ExperimentConfig.from_yaml(path_or_dict)
    if exp.baselines is None:
        raise ConfigError("The experiment config has no 'baselines' section; add one, e.g. "
                          "baselines: {methods: [finetune, lora]}.")
    config = BaselineConfig.from_dict(exp.baselines)
    out = Path(results_dir) if results_dir is not None else Path(exp.results_dir) / exp.name / "baselines"
    data = load_data(exp)
    t0 = time.perf_counter()
    rows = run_baselines(models=list(exp.models), tasks=list(exp.tasks), seeds=list(exp.seeds), config=config,
                         train=data["train"], dev=data["dev"], test=data["test"], results_dir=out,
                         device=device or exp.device, experiment=exp.name)
    log.info("all baselines finished in %.0f s", time.perf_counter() - t0)
    import pandas as pd

    out.mkdir(parents=True, exist_ok=True)

    write_csv(pd.DataFrame(rows), out / "baseline_rows.csv")
    return rows


def load_data(exp) -> dict:
    """Sentences per split role (train/dev/test) of an ``ExperimentConfig``, loaded exactly as the
    probes load them (:func:`probekit.runner.data.load_data`)."""

    return _load(exp)[0]


def summary_table(rows: list[dict]) -> str:
    """Test metrics per model x task x method (mean over seeds), with trainable fractions."""
    import pandas as pd

    df = pd.DataFrame(rows)
    if df.empty:
        return "(no rows)"
    t = df[df.split == "test"].pivot_table(index=["model", "task", "method"], columns="metric", values="value",
                                           aggfunc="mean")
    extra = df[df.split == "test"].groupby(["model", "task", "method"])[
        ["trainable_params", "trainable_fraction", "train_size", "train_seconds"]].mean()
    dev = df[(df.split == "dev") & (df.metric == "accuracy")].groupby(["model", "task", "method"])["value"].mean()
    t = t.join(extra)
    t["dev_accuracy"] = dev
    return t.to_string(float_format=lambda x: f"{x:.4g}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m probekit.baselines", description=__doc__.split("\n\n")[0])
    ap.add_argument("config", help="experiment YAML with a 'baselines' section")
    ap.add_argument("--results-dir", default=None,
                    help="where runs/*.json and baseline_rows.csv go (default <results_dir>/<name>/baselines)")
    ap.add_argument("--device", default=None, help="cpu, cuda, cuda:1... (default: cuda when available)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (default: torch's choice). On a CPU shared with other jobs, 1 is often "
                         "several times faster than oversubscribing the cores.")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("probekit").setLevel(logging.INFO)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    try:
        t0 = time.perf_counter()
        rows = run_config(args.config, results_dir=args.results_dir, device=args.device)
    except ProbekitError as e:
        print(f"error: {e}")
        return e.exit_code
    print(summary_table(rows))
    print(f"total wall time: {time.perf_counter() - t0:.0f} s")
    return 0
