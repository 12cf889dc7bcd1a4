"""Run the baselines section of an experiment config (YAML) and summarise the results.

Usage::

    python -m probekit.baselines configs/baselines.yaml --results-dir results/baselines

Reads the experiment keys ``name``, ``models``, ``dataset``, ``data_dir``, ``tasks``, ``seeds``,
``limit`` and ``baselines`` (other keys, e.g. ``probes``, belong to the probing pipeline and are
ignored here). Finished runs are kept under ``<results-dir>/runs/`` and skipped when the command is
run again; all rows are also written to ``<results-dir>/baseline_rows.csv``.
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import yaml

from probekit.baselines.config import BaselineConfig
from probekit.errors import ConfigError, ProbekitError

log = logging.getLogger(__name__)


def load_config(path_or_dict) -> dict:
    """Read an experiment config (path or already-parsed mapping)."""
    if isinstance(path_or_dict, dict):
        return dict(path_or_dict)
    p = Path(path_or_dict)
    try:
        d = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"Cannot read experiment config {p}: {e}.") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: invalid YAML ({e}).") from None
    if not isinstance(d, dict):
        raise ConfigError(f"{p}: an experiment config must be a mapping.")
    return d


def run_config(path_or_dict, *, results_dir: str | Path, device: str | None = None) -> list[dict]:
    """Run every baseline of an experiment config; returns all rows (also written as CSV)."""
    from probekit.baselines.train import run_baselines

    d = load_config(path_or_dict)
    for key in ("models", "tasks"):
        if not d.get(key):
            raise ConfigError(f"The experiment config needs a non-empty {key!r} list.")
    config = BaselineConfig.from_dict(d.get("baselines"))
    limit = d.get("limit") or {}
    if not isinstance(limit, dict):
        raise ConfigError(f"'limit' must be a mapping like {{train: null, dev: 500, test: null}}, got {limit!r}.")
    t0 = time.perf_counter()
    rows = run_baselines(models=list(d["models"]), tasks=list(d["tasks"]), seeds=list(d.get("seeds") or [0]),
                         config=config, dataset=d.get("dataset", "ud_ewt"), data_dir=d.get("data_dir"), limit=limit,
                         results_dir=results_dir, device=device, experiment=str(d.get("name", "")))
    log.info("all baselines finished in %.0f s", time.perf_counter() - t0)
    import pandas as pd

    out = Path(results_dir)
    out.mkdir(parents=True, exist_ok=True)
    df = pd.DataFrame(rows)
    df.to_csv(out / "baseline_rows.csv", index=False)
    return rows


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
    ap.add_argument("--results-dir", required=True, help="where runs/*.json and baseline_rows.csv go")
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
