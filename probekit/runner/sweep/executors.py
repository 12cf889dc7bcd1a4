"""The three ways a sweep's cells run: in this process (serial), on a local process pool, or as Ray tasks.

Every executor runs each pending model's extraction first (a probe cell reads its model's stores), then the cells
(a study cell loads its model itself and reuses or writes its stores),
and logs each finished step to ``results/<experiment>/sweep/`` (:class:`SweepLog`). Parallelism comes from
:class:`concurrent.futures.ProcessPoolExecutor` or Ray; there is no scheduler of probekit's own. Ray is an optional
extra, imported only when asked for.
"""
from __future__ import annotations

import json
import logging
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from probekit._extras import require
from probekit.errors import ProbekitError
from probekit.runner.sweep.cells import CellDone, Extracted, seeds_text
from probekit.runner.sweep.plan import SweepPlan
from probekit.runner.sweep.workers import (
    extract_model,
    init_worker,
    run_baseline_cell,
    run_cell,
    run_probe_cell,
    run_study_cell,
)

log = logging.getLogger(__name__)

#: Where the sweep keeps its own records inside ``results/<experiment>/``.
SWEEP_DIR = "sweep"


class SweepLog:
    """Append-only JSON-lines records of the sweep: ``extract.jsonl`` (one line per model extraction) and
    ``cells.jsonl`` (one line per finished cell). Written by the driver only (no concurrent writers)."""

    def __init__(self, folder: Path, bar=None):
        self.dir = folder / SWEEP_DIR
        self.dir.mkdir(parents=True, exist_ok=True)
        self.units = 0  # unit files (and baseline runs) computed by the cells of this run
        self.cells = 0
        self.bar = bar  # a progress bar over the pending cells (probekit._progress), advanced per finished cell

    def _write(self, name: str, rec: dict) -> None:
        with open(self.dir / name, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({**rec, "time": time.time()}, default=str) + "\n")

    def extracted(self, info: Extracted) -> None:
        self._write("extract.jsonl", info.record())
        log.info("extraction %s: %d shard(s) computed in %.1f s (%s)", info.model, info.computed_shards,
                 info.seconds, "reused" if info.computed_shards == 0 else "new")

    def finished(self, res: CellDone, n: int) -> None:
        self.units += res.computed_units
        self.cells += 1
        self._write("cells.jsonl", res.record())
        if self.bar is not None:
            self.bar.update(1)
        log.info("[%d/%d] %s %s / %s / %s / %s: %d unit(s) in %.1f s", self.cells, n, res.kind, res.model, res.task,
                 res.method, seeds_text(res.seeds), res.computed_units, res.seconds)


class SweepError(ProbekitError):
    """Some cells of a sweep failed; the others finished and are kept (rerun to retry the failed ones)."""


class _Failures:
    def __init__(self):
        self.items: list[tuple[str, BaseException]] = []

    def add(self, what: str, err: BaseException) -> None:
        self.items.append((what, err))
        log.error("%s failed: %s: %s", what, type(err).__name__, err)

    def raise_if_any(self, n: int) -> None:
        if self.items:
            what, err = self.items[0]
            raise SweepError(f"{len(self.items)} of {n} sweep step(s) failed; finished cells are kept, rerun the sweep "
                             f"to retry the others. First failure: {what}: {type(err).__name__}: {err}")


# ----------------------------------------------------------------------------------------------- local, serial

def run_serial(plan: SweepPlan, rec: SweepLog) -> int:
    """Everything in this process, in plan order; the first error stops the sweep (with its traceback)."""
    infos = {m: extract_model(plan.extraction_spec(m)) for m in plan.pending_models()}
    for info in infos.values():
        rec.extracted(info)
    pending = plan.pending
    for c in pending:
        spec = plan.cell_spec(c)
        rec.finished(run_cell(spec, infos.get(c.model)), len(pending))
    return rec.cells


# ----------------------------------------------------------------------------------------------- local pool

def run_pool(plan: SweepPlan, workers: int, rec: SweepLog) -> int:
    """A pool of ``workers`` processes; failed cells are collected and raised together at the end
    (:class:`SweepError`), the others run on. Ctrl-C ends the workers at once."""
    threads = max(1, (os.cpu_count() or 1) // workers)
    ctx = multiprocessing.get_context("spawn")  # fork after torch has started threads can deadlock
    failures = _Failures()
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=init_worker, initargs=(threads,))
    try:
        _submit_all(pool, plan, rec, failures)
    except BaseException:
        # Ctrl-C (or an error here): stop now. Drop the queued cells and end the workers (finished units are on disk;
        # a rerun resumes) instead of the executor's shutdown, which would first run every queued cell.
        procs = list((getattr(pool, "_processes", None) or {}).values())  # shutdown() forgets them
        pool.shutdown(wait=False, cancel_futures=True)
        for proc in procs:
            proc.terminate()
        raise
    pool.shutdown(wait=True)
    failures.raise_if_any(len(plan.pending) + len(plan.pending_models()))
    return rec.cells


def _submit_all(pool: ProcessPoolExecutor, plan: SweepPlan, rec: SweepLog, failures: _Failures) -> None:
    # step 1: every model's extraction (once per model), step 2: the cells
    futs = {pool.submit(extract_model, plan.extraction_spec(m)): m for m in plan.pending_models()}
    infos: dict[str, Extracted] = {}
    for f in as_completed(futs):
        try:
            infos[futs[f]] = f.result()
            rec.extracted(infos[futs[f]])
        except Exception as e:  # noqa: BLE001 - reported with the others at the end
            failures.add(f"extraction of {futs[f]}", e)
    pending = plan.pending
    cell_futs: dict = {}
    for c in pending:
        if c.kind == "probe" and c.model not in infos:
            continue  # its extraction failed (reported)
        f = pool.submit(run_cell, plan.cell_spec(c), infos.get(c.model))
        cell_futs[f] = c
    for f in as_completed(cell_futs):
        try:
            res = f.result()
        except Exception as e:  # noqa: BLE001
            failures.add(cell_futs[f].label, e)
            continue
        rec.finished(res, len(pending))


# ----------------------------------------------------------------------------------------------- Ray

def import_ray():
    """``import ray`` with a clear error when the optional extra is missing."""
    return require("ray", extra="ray", purpose="The Ray executor (or use --executor local)")


def extraction_gpus(ray, config) -> int:
    """GPUs one extraction (or baseline) task asks Ray for: 1 when the cluster has GPUs, else 0; with
    ``device_map: auto`` every GPU of the largest node, so that a model too big for one GPU is spread over a whole
    node (Ray makes those GPUs the task's visible devices, and accelerate fills them)."""
    if float(ray.cluster_resources().get("GPU", 0)) < 1:
        return 0
    if config.device_map == "auto":
        return int(max((n.get("Resources", {}).get("GPU", 0) for n in ray.nodes() if n.get("Alive")), default=1))
    return 1


def run_ray(plan: SweepPlan, address: str | None, rec: SweepLog) -> int:
    """Ray tasks: one per extraction (a GPU when the cluster has one), one per cell; a probe cell's task takes its
    model's extraction as an argument, so Ray starts it when that extraction is done."""
    ray = import_ray()
    started = False
    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=True)
        started = True
    try:
        gpus = float(ray.cluster_resources().get("GPU", 0))
        gpu = extraction_gpus(ray, plan.config)
        log.info("Ray cluster: %s CPUs, %s GPUs; extraction tasks ask for %d GPU(s)",
                 ray.cluster_resources().get("CPU"), gpus, gpu)
        extract_task = ray.remote(num_cpus=1, num_gpus=gpu)(extract_model)
        cell_task = ray.remote(num_cpus=1, num_gpus=0)(run_probe_cell)
        baseline_task = ray.remote(num_cpus=1, num_gpus=gpu)(run_baseline_cell)
        study_task = ray.remote(num_cpus=1, num_gpus=gpu)(run_study_cell)  # loads its model
        ext = {m: extract_task.remote(plan.extraction_spec(m)) for m in plan.pending_models()}
        # probe cells are CPU tasks: without an explicit device they run on the CPU
        probe_cfg = plan.config if plan.config.device else plan.config.replace(device="cpu")
        refs = {}
        for c in plan.pending:
            if c.kind == "probe":
                ref = cell_task.remote(plan.cell_spec(c, probe_cfg), ext[c.model])
            else:
                ref = (study_task if c.kind == "study" else baseline_task).remote(plan.cell_spec(c))
            refs[ref] = c
        failures = _Failures()
        for m, ref in ext.items():
            try:
                rec.extracted(ray.get(ref))
            except Exception as e:  # noqa: BLE001 - a RayTaskError wrapping the worker's exception
                failures.add(f"extraction of {m}", e)
        left = list(refs)
        while left:
            ready, left = ray.wait(left, num_returns=1)
            try:
                res = ray.get(ready[0])
            except Exception as e:  # noqa: BLE001
                failures.add(refs[ready[0]].label, e)
                continue
            rec.finished(res, len(refs))
        failures.raise_if_any(len(refs) + len(ext))
        return rec.cells
    finally:
        if started:
            ray.shutdown()
