"""The work of a sweep, as it runs in a worker (this process, a pool process or a Ray task).

Each function takes a typed spec (:mod:`probekit.runner.sweep.cells`) and calls the runner's own steps, so that a
sweep writes exactly the stores and unit files ``probekit run`` would.
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from probekit.activations.store import ActivationStore
from probekit.baselines.config import BaselineConfig
from probekit.baselines.train import run_baselines
from probekit.config import ExperimentConfig
from probekit.errors import DataError, ProbekitError
from probekit.results.table import load_unit, save_unit
from probekit.runner.data import RunModels, data_checksum, extract_site_stores, load_config_model, load_data
from probekit.runner.probe_task import probe_task
from probekit.runner.studies import study_named
from probekit.runner.sweep.cells import CellDone, CellSpec, Extracted, ExtractionSpec
from probekit.runner.units import ProbePolicy, plan_units

#: Data loaded in this process, by the settings that select it (a worker runs many cells on the same data).
_DATA: dict[str, tuple[dict, dict]] = {}


def load_data_cached(cfg: ExperimentConfig) -> tuple[dict, dict]:
    """:func:`probekit.runner.data.load_data`, memoised per process by the config's data settings."""
    key = json.dumps([cfg.dataset, cfg.splits, cfg.files, cfg.columns, cfg.data_dir, cfg.limit, cfg.train_sentences],
                     sort_keys=True, default=str)
    if key not in _DATA:
        _DATA.clear()  # one data set at a time
        _DATA[key] = load_data(cfg)
    return _DATA[key]


def data_id(data_fp: dict) -> dict:
    """The data a fingerprint names, per split role: [checksum and slice, number of sentences]."""
    return {r: [data_checksum(v), v["n_sentences"]] for r, v in data_fp.items()}


def _check_data(cfg: ExperimentConfig, data_fp: dict) -> dict:
    """Load the data in a worker and check it is the driver's (same files, same slice)."""
    data, fp = load_data_cached(cfg)
    if data_id(fp) != data_id(data_fp):
        raise DataError(f"A sweep worker read other data than the driver ({data_id(fp)} vs {data_id(data_fp)}). "
                        "Workers on other machines need the same data files: set data_dir (or "
                        "PROBEKIT_DATA_DIR) to a shared folder.")
    return data


def extract_model(spec: ExtractionSpec) -> Extracted:
    """Extraction step of one model: write or reuse its train/dev/test stores.

    It calls :func:`probekit.runner.data.extract_site_stores`, as ``probekit run`` does, so the stores are the
    ones ``probekit run`` would use.
    """
    cfg = spec.config
    data = _check_data(cfg, spec.data_fp)
    t0 = time.perf_counter()
    lm = load_config_model(cfg, spec.model)
    written = extract_site_stores(cfg, lm, data, spec.data_fp, progress=False)
    out = Extracted(model=spec.model, lm_info={"name": spec.model, "kind": lm.kind, "hash": lm.weights_hash},
                    num_layers=lm.num_layers,
                    stores={site: {role: str(st.path) for role, st in by_role.items()}
                            for site, by_role in written.items()},
                    computed_shards=max(sum(st.computed_shards for st in by_role.values())
                                        for by_role in written.values()),
                    seconds=time.perf_counter() - t0, data=data_id(spec.data_fp), host=os.uname().nodename)
    del lm
    return out


def run_probe_cell(spec: CellSpec, extracted: Extracted) -> CellDone:
    """One probe cell: train the pending units of model × task × probe × seed(s) on the finished stores (no model is
    loaded) and write their unit files.

    Unit keys come from :func:`probekit.runner.units.plan_units` with the driver's data and model
    fingerprints, so they are the keys ``probekit run`` would use.
    """
    cfg = spec.config
    runs = Path(cfg.results_dir) / cfg.name / "runs"
    units = [u for u in plan_units(cfg, spec.model, spec.model_fp, spec.data_fp)
             if (u.task, u.probe) == (spec.task, spec.method) and u.seed in spec.seeds]
    if sorted(u.key for u in units) != sorted(spec.units):
        raise ProbekitError(f"Sweep cell {spec.model} / {spec.task}: the worker planned other unit keys than the "
                            "driver (different probekit versions on driver and workers?).")
    pending = [u for u in units if load_unit(runs / f"{u.key}.json") is None]
    t0 = time.perf_counter()
    if pending:
        data = _check_data(cfg, spec.data_fp)
        for site in sorted({u.site for u in pending}):
            stores = {role: ActivationStore(p) for role, p in extracted.stores[site].items()}
            site_units = [u for u in pending if u.site == site]
            with _one_blas_thread():
                done = probe_task(lm_info=extracted.lm_info, stores=stores, data=data, task=cfg.task(spec.task),
                                  policy=ProbePolicy.from_config(cfg), units=site_units)
            for u in site_units:
                save_unit(runs / f"{u.key}.json", done[u])
    return spec.done(len(pending), time.perf_counter() - t0, os.uname().nodename)


def _one_blas_thread():
    """One BLAS thread while a probe cell runs, whatever the executor.

    Probe predictions are float32 matrix products; OpenBLAS splits them differently with another
    thread count, which can flip a near-tie prediction. Pinning the count makes a cell give the same
    bytes in this process, a local worker or a Ray task (Ray starts workers with OMP_NUM_THREADS=1).
    Probe cells are many small problems, for which one thread is also the fastest.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # scikit-learn depends on it; without it, leave the threads alone
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def run_study_cell(spec: CellSpec) -> CellDone:
    """One study cell: the study section ``spec.method`` for the model ``spec.model``, through the study's own run
    function (:mod:`probekit.runner.studies`), which writes its unit files; the model is loaded (once) only when a
    unit is unfinished. Its stores are the runner's (``resid_post``, written or reused)."""
    cfg = spec.config
    study = study_named(spec.method)
    settings = study.settings(cfg)
    todo = study.unfinished(cfg, settings, spec.model, spec.data_fp)
    t0 = time.perf_counter()
    if todo:
        data = _check_data(cfg, spec.data_fp)
        loaded = RunModels(cfg, data, spec.data_fp, progress=False)
        study.run(cfg, settings, data=data, data_fp=spec.data_fp, models=[spec.model], load=loaded.study,
                  progress=False)
        loaded.release(spec.model)
    return spec.done(todo, time.perf_counter() - t0, os.uname().nodename)


def run_cell(spec: CellSpec, extracted: Extracted | None = None) -> CellDone:
    """Any cell: a probe cell (on its model's ``extracted`` stores), a baseline cell or a study cell."""
    if spec.kind == "probe":
        return run_probe_cell(spec, extracted)
    return run_study_cell(spec) if spec.kind == "study" else run_baseline_cell(spec)


def run_baseline_cell(spec: CellSpec) -> CellDone:
    """One tuning-baseline cell: model × method × task × seed through
    :func:`probekit.baselines.train.run_baselines` (resumable by its run record)."""
    cfg = spec.config
    data, _ = load_data_cached(cfg)  # the runner's data, so that its baseline step finds this run finished
    t0 = time.perf_counter()
    counts: dict = {}
    run_baselines(models=[spec.model], tasks=[spec.task], seeds=list(spec.seeds), methods=[spec.method],
                  config=BaselineConfig.from_dict(cfg.baselines), train=data["train"], dev=data["dev"],
                  test=data["test"], results_dir=Path(cfg.results_dir) / cfg.name / "baselines",
                  device=cfg.device, experiment=cfg.name, counts=counts)
    return spec.done(counts.get("trained", 0), time.perf_counter() - t0, os.uname().nodename)


def init_worker(threads: int) -> None:
    """Local worker process: limit torch threads so that N workers do not oversubscribe the CPU. Ctrl-C is the
    driver's to handle (a worker that caught it failed one cell and went on to the next)."""
    import signal

    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)

    torch.set_num_threads(max(1, threads))
    logging.basicConfig(level=logging.WARNING)
