"""Run a sweep: plan it (unless given a plan), run the unfinished cells on an executor, then aggregate."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from probekit._progress import progress_bar
from probekit.config import ExperimentConfig
from probekit.errors import ConfigError, unknown_name
from probekit.runner.experiment import ExperimentResult, run_experiment
from probekit.runner.sweep.executors import SweepLog, import_ray, run_pool, run_ray, run_serial
from probekit.runner.sweep.plan import SweepPlan, plan_sweep

EXECUTORS = ("local", "ray")


@dataclass
class SweepResult:
    """What :func:`run_sweep` returns: the plan it ran, how many cells it computed, the aggregated result."""

    plan: SweepPlan
    computed_cells: int
    result: ExperimentResult
    seconds: float
    computed_units: int = 0

    @property
    def folder(self) -> Path:
        return self.plan.folder


def run_sweep(cfg: ExperimentConfig, *, executor: str = "local", workers: int = 1, address: str | None = None,
              progress: bool = True, plan: SweepPlan | None = None) -> SweepResult:
    """Run every unfinished cell of a sweep, then aggregate the experiment's tables and figures.

    Args:
        cfg: the experiment config whose cross product is swept.
        executor: ``local`` (``workers`` processes; 1 = in this process) or ``ray``.
        workers: local worker processes.
        address: Ray cluster address (``auto``, ``ray://host:10001``); default: the running Ray
            instance of this process, else a new local one.
        progress: a progress bar over the cells (with an ETA), and the aggregation step's bars.
        plan: a plan made by :func:`plan_sweep` just before (else it is made here).
    """
    if executor not in EXECUTORS:
        raise unknown_name("executor", executor, EXECUTORS)
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}.")
    if executor == "ray":
        import_ray()  # fail before any work
    t0 = time.perf_counter()
    plan = plan if plan is not None else plan_sweep(cfg)
    n = 0
    with progress_bar(len(plan.pending), "sweep", unit="cell", enabled=progress and bool(plan.pending)) as bar:
        rec = SweepLog(plan.folder, bar)
        if plan.pending:
            if executor == "ray":
                n = run_ray(plan, address, rec)
            elif workers > 1:
                n = run_pool(plan, workers, rec)
            else:
                n = run_serial(plan, rec)
    # every unit and baseline run is finished: the runner only reads them back and writes the tables
    result = run_experiment(plan.config, progress=progress)
    return SweepResult(plan=plan, computed_cells=n, result=result, seconds=time.perf_counter() - t0,
                       computed_units=rec.units)


def load_sweep_config(path: str | os.PathLike) -> ExperimentConfig:
    """A sweep config is an experiment config: :meth:`ExperimentConfig.from_yaml`."""
    return ExperimentConfig.from_yaml(path)
