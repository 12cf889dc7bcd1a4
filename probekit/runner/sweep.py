"""Sweeps: the cross product models × tasks × probes × seeds (× tuning baselines) as independent cells.

A sweep config is an ordinary experiment config (:class:`probekit.config.ExperimentConfig`);
``probekit run`` computes the same thing serially. ``probekit sweep`` cuts it into *cells* and
runs them in parallel, on local worker processes or on a Ray cluster:

* **extraction** (one per model, ``NAME@random`` counting as its own model): load the model once
  and write (or reuse) its activation stores for train / dev / test. On Ray these tasks ask for
  a GPU when the cluster has one.
* **probe cells** (model × task × probe × seed, every layer): read the finished stores and
  train the probes; no model is loaded. The seeds of a *linear* probe form one cell: its fit is a
  convex problem solved once per task and layer (seed-independent, see
  :func:`probekit.runner.experiment.probe_task`), and only the control task and MDL vary with the seed, so
  splitting them would repeat the fit per seed. MLP probes get one cell per seed. The rows are written as the runner's unit files
  (``results/<experiment>/runs/<key>.json``), with the same keys :func:`probekit.runner.experiment.run_experiment`
  uses, so finished cells are skipped on a rerun and ``probekit run`` on the same config
  recomputes nothing.
* **baseline cells** (model × tuning method × task × seed, when the config has ``baselines``):
  one :func:`probekit.baselines.train.run_baselines` run each, resumable through its run files.

When every cell is finished, the driver aggregates: it calls :func:`run_experiment`, which finds
every unit (and baseline run) done, loads no model, and writes ``results.csv`` (probe and tuning
rows), ``summary.csv`` and the figures.

Parallelism comes from :class:`concurrent.futures.ProcessPoolExecutor` (local) or Ray tasks whose
probe cells depend on their model's extraction task; there is no scheduler of probekit's own.
Ray is an optional extra (``pip install probekit[ray]``) and imported only when asked for.
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from probekit.config import ExperimentConfig
from probekit.errors import ConfigError, DataError, ProbekitError

log = logging.getLogger(__name__)

#: Where the sweep keeps its own records inside ``results/<experiment>/``.
SWEEP_DIR = "sweep"


# ----------------------------------------------------------------------------------------------- plan

@dataclass
class Cell:
    """One independent piece of a sweep.

    ``kind`` is ``"probe"`` (``method`` = probe type, all layers, every pooling of the task) or
    ``"baseline"`` (``method`` = tuning method). ``seeds`` holds one seed, or every seed of a linear
    probe. ``units`` are the runner's unit keys of a probe cell.
    """

    kind: str
    model: str
    task: str
    method: str
    seeds: list[int]
    units: list[str] = field(default_factory=list)
    done: bool = False
    estimate_s: float | None = None

    @property
    def label(self) -> str:
        return f"{self.kind} {self.model} / {self.task} / {self.method} / {_seeds(self.seeds)}"


def _seeds(seeds: list[int]) -> str:
    return f"seed {seeds[0]}" if len(seeds) == 1 else "seeds " + ",".join(map(str, seeds))


@dataclass
class SweepPlan:
    """Every cell of a sweep, which are finished, and a time estimate from earlier measurements."""

    config: ExperimentConfig
    folder: Path
    models: list[str]
    cells: list[Cell]
    data_fp: dict
    model_fps: dict[str, dict]
    #: model -> estimated extraction seconds (0.0 = stores found finished, None = nothing measured)
    extraction_s: dict[str, float | None] = field(default_factory=dict)

    @property
    def pending(self) -> list[Cell]:
        return [c for c in self.cells if not c.done]

    def pending_models(self) -> list[str]:
        """Models that still have probe cells to run (their stores are needed)."""
        need = {c.model for c in self.pending if c.kind == "probe"}
        return [m for m in self.models if m in need]

    def estimate_s(self) -> tuple[float, int]:
        """(sum of the known estimates in seconds, number of pending items with no estimate)."""
        total, unknown = 0.0, 0
        for c in self.pending:
            if c.estimate_s is None:
                unknown += 1
            else:
                total += c.estimate_s
        for m in self.pending_models():
            e = self.extraction_s.get(m)
            if e is None:
                unknown += 1
            else:
                total += e
        return total, unknown

    def describe(self, *, workers: int = 1) -> str:
        """The plan as text: cell counts per kind and model, and the time estimate."""
        lines = [f"Sweep {self.config.name!r} -> {self.folder}"]
        n_tasks, n_probes, n_seeds = len(self.config.tasks), len(self.config.probes), len(self.config.seeds)
        lines.append(f"  {len(self.models)} model(s) × {n_tasks} task(s) × {n_probes} probe(s) × {n_seeds} seed(s)"
                     + (f" + baselines ({', '.join(_baseline_methods(self.config))})" if self.config.baselines else ""))
        for kind in ("probe", "baseline"):
            cells = [c for c in self.cells if c.kind == kind]
            if not cells:
                continue
            done = sum(c.done for c in cells)
            lines.append(f"  {kind} cells: {len(cells)} total, {done} finished (skipped), {len(cells) - done} to run")
            if kind == "probe":
                n_units = sum(len(c.units) for c in cells)
                lines.append(f"    ({n_units} result units; the seeds of a linear probe share one cell, as they "
                             "share its fit)")
            for m in self.models:
                mc = [c for c in cells if c.model == m]
                if mc:
                    lines.append(f"    {m:28} {len(mc):4} cells, {sum(not c.done for c in mc):4} to run")
        pm = self.pending_models()
        if pm:
            parts = []
            for m in pm:
                e = self.extraction_s.get(m)
                parts.append(f"{m} ({'stores already extracted' if e == 0.0 else _fmt_s(e)})")
            lines.append(f"  extraction: {len(pm)} model(s): " + ", ".join(parts))
        total, unknown = self.estimate_s()
        if not self.pending:
            lines.append("  nothing to run: every cell is finished (the tables will be re-aggregated)")
        elif unknown and total == 0:
            lines.append("  time estimate: unknown (nothing measured yet for these models/tasks; "
                         "run a small slice first to get one)")
        else:
            est = f"~{_fmt_s(total)} of compute"
            if workers > 1:
                est += f", ~{_fmt_s(total / workers)} wall with {workers} workers"
            if unknown:
                est += f"; plus {unknown} item(s) with no measurement (unknown)"
            lines.append("  time estimate: " + est + " (from earlier measured runs, scaled by training size; "
                         "model loading not included)")
        return "\n".join(lines)


def _fmt_s(s: float | None) -> str:
    if s is None or not math.isfinite(s):
        return "unknown"
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def _baseline_methods(cfg: ExperimentConfig) -> list[str]:
    from probekit.baselines.config import BaselineConfig

    return list(BaselineConfig.from_dict(cfg.baselines).methods) if cfg.baselines else []


def resolve_paths(cfg: ExperimentConfig) -> ExperimentConfig:
    """The config with absolute ``results_dir``/``store_dir``/``data_dir``/``files`` so that worker
    processes (other working directories, other machines) see the same folders. None of these
    enters a unit key."""
    from probekit.activations.extract import default_store_root

    def absolute(p):
        return str(Path(p).expanduser().resolve()) if p is not None else None

    return cfg.replace(results_dir=absolute(cfg.results_dir),
                       store_dir=absolute(cfg.store_dir) or str(default_store_root().resolve()),
                       data_dir=absolute(cfg.data_dir),
                       files={k: absolute(v) for k, v in (cfg.files or {}).items()})


def plan_sweep(cfg: ExperimentConfig) -> SweepPlan:
    """Every cell of the sweep with its status (finished = all its unit / run files exist).

    Reads the data (to fingerprint it, as the runner does) and the models' weight hashes
    (memoised), loads no model.
    """
    from probekit.runner.experiment import model_list, plan_units
    from probekit.activations.models import fingerprint
    from probekit.results.table import load_unit

    cfg = resolve_paths(cfg)
    folder = Path(cfg.results_dir) / cfg.name
    runs = folder / "runs"
    data, data_fp = load_data_cached(cfg)
    models = model_list(cfg)
    cells: list[Cell] = []
    fps = {}
    for m in models:
        fps[m] = fingerprint(m)
        by_cell: dict[tuple, list] = {}
        for u in plan_units(cfg, m, fps[m], data_fp):
            cell_seed = None if u.probe == "linear" else u.seed  # linear: one cell for every seed
            by_cell.setdefault((u.task, u.probe, cell_seed), []).append(u)
        for (task, probe, _), units in by_cell.items():
            keys = [u.key for u in units]
            done = all(load_unit(runs / f"{k}.json") is not None for k in keys)
            seeds = sorted({u.seed for u in units})
            cells.append(Cell("probe", m, task, probe, seeds, units=keys, done=done))
    if cfg.baselines:
        cells += _baseline_cells(cfg, folder, data)
    plan = SweepPlan(config=cfg, folder=folder, models=models, cells=cells, data_fp=data_fp, model_fps=fps)
    _estimate(plan, data)
    return plan


def _baseline_cells(cfg: ExperimentConfig, folder: Path, data: dict) -> list[Cell]:
    from probekit.baselines.config import BaselineConfig
    from probekit.baselines.train import _read_run, data_identity, run_identity, run_path
    from probekit.activations.models import fingerprint
    from probekit.tasks import get_task

    bcfg = BaselineConfig.from_dict(cfg.baselines)
    data_id = data_identity({role: data[role] for role in ("train", "dev", "test")})
    # word-level tasks only, as the runner (run_config_baselines): tuning baselines tag words
    tasks = [t for t in (get_task(name) for name in cfg.tasks) if t.level == "word"]
    out = []
    for m in [m for m in cfg.models if "@" not in m]:  # tuning baselines on the real models only (as the runner)
        model_id = fingerprint(m)
        for method in bcfg.methods:
            fp = bcfg.fingerprint(method)
            for task in tasks:
                identity = run_identity(fp, data_id, model_id, task)
                for seed in cfg.seeds:
                    path = run_path(folder / "baselines", model=m, method=method, task=task.name, seed=seed)
                    # the reader run_baselines resumes with (None for a missing, damaged or older-format file)
                    stored = _read_run(path) if path.is_file() else None
                    done = stored is not None and stored.get("identity") == identity
                    out.append(Cell("baseline", m, task.name, method, [seed], done=done))
    return out


# ----------------------------------------------------------------------------------------------- estimates

def _unit_costs(rows: list[dict]) -> dict | None:
    """Per-layer seconds of a finished unit: ``{"fit", "control", "mdl", "size", "n_layers"}`` (None when not
    measured). ``train_seconds`` in the rows is already per layer (a layer group's time / its size)."""
    parts: dict[str, dict] = {"fit": {}, "control": {}, "mdl": {}}
    size = None
    for r in rows:
        t, layer = r.get("train_seconds"), r.get("layer")
        if t is None or layer is None or r.get("method") != "probe":
            continue
        if str(r.get("metric", "")).startswith("mdl_"):
            parts["mdl"][layer] = float(t)
        elif str(r.get("control")) == "True":
            parts["control"][layer] = float(t)
        else:
            parts["fit"][layer] = float(t)
            size = size or r.get("train_size")
    if not parts["fit"]:
        return None
    out = {k: (sum(v.values()) / len(v) if v else None) for k, v in parts.items()}
    out.update(size=size, n_layers=len(parts["fit"]))
    return out


def _measurements(results_dir: Path, limit: int = 600) -> dict[tuple, list[tuple]]:
    """Measured unit costs from the newest ``limit`` unit files under ``results_dir/*/runs``:
    {(model, task, probe): [:func:`_unit_costs` of each unit, ...]}."""
    out: dict[tuple, list[tuple]] = {}
    files = []
    for runs in results_dir.glob("*/runs"):
        for p in runs.glob("*.json"):
            if not p.name.startswith("baseline-"):
                try:
                    files.append((p.stat().st_mtime, p))
                except OSError:
                    continue
    from probekit.results.table import load_unit

    for _, p in sorted(files, reverse=True)[:limit]:
        rows = load_unit(p)  # the one reader of unit files (checksummed format; damaged = None)
        if not rows:
            continue
        first = next((r for r in rows if isinstance(r, dict) and r.get("layer") is not None), None)
        if first is None:
            continue
        cost = _unit_costs(rows)
        if cost is not None:
            out.setdefault((first["model"], first["task"], first["probe"]), []).append(cost)
    return out


def _estimate(plan: SweepPlan, data: dict) -> None:
    """Fill ``cell.estimate_s`` and ``plan.extraction_s`` from what earlier runs measured."""
    import numpy as np

    from probekit.tasks import get_task

    cfg = plan.config
    meas = _measurements(Path(cfg.results_dir))
    sizes = {}
    for t in cfg.tasks:
        task = get_task(t)
        y = task.encode(data["train"])
        sizes[t] = int((np.asarray(y) >= 0).sum())
    for c in plan.pending:
        if c.kind != "probe":
            c.estimate_s = _baseline_estimate(plan, c)
            continue
        ms = meas.get((c.model, c.task, c.method))
        if not ms:
            continue

        def mean(key: str, n_items: int) -> float | None:
            vals = [m[key] * (n_items / m["size"] if m["size"] else 1.0) for m in ms if m[key] is not None]
            return float(np.mean(vals)) if vals else None

        n = sizes[c.task]
        n_layers = len(cfg.layers) if cfg.layers is not None else max(m["n_layers"] for m in ms)
        n_pool = max(1, len(c.units) // len(c.seeds))
        fit, ctrl = mean("fit", n), (mean("control", n) if cfg.control_tasks else 0.0)
        if ctrl is None:
            continue  # control tasks never measured here: unknown
        if c.method == "linear":  # one fit shared by the seeds, a control fit per seed
            per_pool = fit + len(c.seeds) * ctrl
        else:
            per_pool = len(c.seeds) * (fit + ctrl)
        if cfg.mdl and c.method == "linear" and cfg.seeds[0] in c.seeds:
            mdl = mean("mdl", min(n, cfg.mdl_max_examples or n))
            if mdl is None:
                continue  # MDL never measured for this model/task: unknown
            per_pool += mdl
        c.estimate_s = per_pool * n_layers * n_pool
    for m in plan.pending_models():
        plan.extraction_s[m] = _extraction_estimate(plan, m)


def _baseline_estimate(plan: SweepPlan, cell: Cell) -> float | None:
    """Mean ``train_seconds`` of earlier finished runs of the same model × method × task, else None."""
    from probekit.baselines.train import _read_run

    runs = plan.folder / "baselines" / "runs"
    vals = []
    for p in runs.glob(f"baseline-*-{cell.method}-{cell.task}-seed*.json") if runs.is_dir() else []:
        d = _read_run(p)
        if d is None:
            continue
        for r in d["rows"][:1]:
            if r.get("model") == cell.model and r.get("train_seconds") is not None:
                vals.append(float(r["train_seconds"]))
    return sum(vals) / len(vals) if vals else None


def _extraction_records(folder: Path) -> list[dict]:
    p = folder / SWEEP_DIR / "extract.jsonl"
    if not p.is_file():
        return []
    out = []
    for line in p.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def _extraction_estimate(plan: SweepPlan, model: str) -> float | None:
    """0.0 when this sweep already extracted the model's stores for the same data, else seconds from the
    forward-pass time recorded in earlier stores of the model (per word × words now), else None."""
    n_words = sum(v["n_words"] for v in plan.data_fp.values())
    rates = []
    records = []
    for exp in Path(plan.config.results_dir).glob("*"):
        records += _extraction_records(exp)
        prov = exp / "provenance.json"
        if prov.is_file():
            try:
                stores = json.loads(prov.read_text()).get("models", {}).get(model, {}).get("stores", {})
                records.append({"model": model, "stores": stores})
            except (OSError, json.JSONDecodeError, AttributeError):
                pass
    for rec in records:
        if rec.get("model") != model:
            continue
        same = rec.get("data") == _data_id(plan.data_fp) and bool(rec.get("stores"))
        for path in (rec.get("stores") or {}).values():
            try:
                man = json.loads((Path(path) / "manifest.json").read_text())
            except (OSError, json.JSONDecodeError):
                same = False
                continue
            same = same and bool(man.get("complete"))
            fw, nw = man.get("stats", {}).get("forward_seconds"), man.get("n_words")
            if fw and nw:
                rates.append(fw / nw)
        if same:
            return 0.0
    return float(sum(rates) / len(rates) * n_words) if rates else None


def _data_id(data_fp: dict) -> dict:
    from probekit.runner.experiment import data_checksum

    return {r: [data_checksum(v), v["n_sentences"]] for r, v in data_fp.items()}


# ----------------------------------------------------------------------------------------------- work (in workers)

#: Data loaded in this process, by the settings that select it (a worker runs many cells on the same data).
_DATA: dict[str, tuple[dict, dict]] = {}


def load_data_cached(cfg: ExperimentConfig) -> tuple[dict, dict]:
    """:func:`probekit.runner.experiment.load_data`, memoised per process by the config's data settings."""
    from probekit.runner.experiment import load_data

    key = json.dumps([cfg.dataset, cfg.splits, cfg.files, cfg.data_dir, cfg.limit, cfg.train_sentences],
                     sort_keys=True, default=str)
    if key not in _DATA:
        _DATA.clear()  # one data set at a time
        _DATA[key] = load_data(cfg)
    return _DATA[key]


def _check_data(cfg: ExperimentConfig, data_fp: dict) -> dict:
    """Load the data in a worker and check it is the driver's (same files, same slice)."""
    data, fp = load_data_cached(cfg)
    if _data_id(fp) != _data_id(data_fp):
        raise DataError(f"A sweep worker read other data than the driver ({_data_id(fp)} vs {_data_id(data_fp)}). "
                        "Workers on other machines need the same data files: set data_dir (or "
                        "PROBEKIT_DATA_DIR) to a shared folder.")
    return data


def extract_model(cfg_dict: dict, model: str, data_fp: dict) -> dict:
    """Extraction step of one model (runs in a worker): write or reuse its train/dev/test stores.

    It calls :func:`probekit.runner.experiment.extract_stores`, as ``probekit run`` does, so the stores are the
    ones ``probekit run`` would use. Returns what the probe cells need: store paths and the model's
    name / kind / weights hash.
    """
    from probekit.runner.experiment import extract_stores
    from probekit.activations.models import load_model

    cfg = ExperimentConfig.from_dict(cfg_dict)
    data = _check_data(cfg, data_fp)
    t0 = time.perf_counter()
    lm = load_model(model, device=cfg.device, dtype=cfg.weights_dtype)
    written = extract_stores(cfg, lm, data, data_fp, progress=False)
    stores = {role: str(st.path) for role, st in written.items()}
    computed = sum(st.computed_shards for st in written.values())
    info = {"model": model, "lm_info": {"name": model, "kind": lm.kind, "hash": lm.weights_hash},
            "num_layers": lm.num_layers, "stores": stores, "computed_shards": computed,
            "seconds": time.perf_counter() - t0, "data": _data_id(data_fp), "host": os.uname().nodename}
    del lm
    return info


def run_probe_cell(cfg_dict: dict, cell: dict, model_info: dict, data_fp: dict, model_fp: dict,
                   device: str | None = None) -> dict:
    """One probe cell (runs in a worker): train the pending units of model × task × probe × seed(s)
    on the finished stores (no model is loaded) and write their unit files.

    Unit keys come from :func:`probekit.runner.experiment.plan_units` with the driver's data and model
    fingerprints, so they are the keys ``probekit run`` would use. ``device`` overrides the config's.
    """
    from probekit.runner.experiment import Unit, plan_units, probe_task
    from probekit.results.table import load_unit, save_unit
    from probekit.activations.store import ActivationStore
    from probekit.tasks import get_task

    cfg = ExperimentConfig.from_dict(cfg_dict)
    if device is not None:
        cfg = cfg.replace(device=device)
    runs = Path(cfg.results_dir) / cfg.name / "runs"
    units: list[Unit] = [u for u in plan_units(cfg, cell["model"], model_fp, data_fp)
                         if (u.task, u.probe) == (cell["task"], cell["method"]) and u.seed in cell["seeds"]]
    if sorted(u.key for u in units) != sorted(cell["units"]):
        raise ProbekitError(f"Sweep cell {cell['model']} / {cell['task']}: the worker planned other unit keys than "
                            "the driver (different probekit versions on driver and workers?).")
    pending = [u for u in units if load_unit(runs / f"{u.key}.json") is None]
    t0 = time.perf_counter()
    if pending:
        data = _check_data(cfg, data_fp)
        stores = {role: ActivationStore(p) for role, p in model_info["stores"].items()}
        with _one_blas_thread():
            probe_task(lm_info=model_info["lm_info"], stores=stores, data=data, task=get_task(cell["task"]),
                       cfg=cfg, units=pending, progress=False)
        for u in pending:
            save_unit(runs / f"{u.key}.json", u.rows)
    return {**cell, "computed_units": len(pending), "seconds": time.perf_counter() - t0,
            "host": os.uname().nodename}


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


def run_baseline_cell(cfg_dict: dict, cell: dict) -> dict:
    """One tuning-baseline cell (runs in a worker): model × method × task × seed through
    :func:`probekit.baselines.train.run_baselines` (resumable by its run file)."""
    from probekit.baselines.config import BaselineConfig
    from probekit.baselines.train import run_baselines

    cfg = ExperimentConfig.from_dict(cfg_dict)
    data, _ = load_data_cached(cfg)  # the runner's data, so that its baseline step finds this run finished
    t0 = time.perf_counter()
    counts: dict = {}
    run_baselines(models=[cell["model"]], tasks=[cell["task"]], seeds=list(cell["seeds"]), methods=[cell["method"]],
                  config=BaselineConfig.from_dict(cfg.baselines), train=data["train"], dev=data["dev"],
                  test=data["test"], results_dir=Path(cfg.results_dir) / cfg.name / "baselines",
                  device=cfg.device, experiment=cfg.name, counts=counts)
    return {**cell, "computed_units": counts.get("trained", 0), "seconds": time.perf_counter() - t0,
            "host": os.uname().nodename}


def _init_worker(threads: int) -> None:
    """Local worker process: limit torch threads so that N workers do not oversubscribe the CPU. Ctrl-C is the
    driver's to handle (a worker that caught it failed one cell and went on to the next)."""
    import signal

    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)

    torch.set_num_threads(max(1, threads))
    logging.basicConfig(level=logging.WARNING)


# ----------------------------------------------------------------------------------------------- executors

def _cell_dict(c: Cell) -> dict:
    d = asdict(c)
    d.pop("estimate_s", None)
    d.pop("done", None)
    return d


class _Log:
    """Append-only JSON-lines records of the sweep (driver side only: no concurrent writers)."""

    def __init__(self, folder: Path):
        self.dir = folder / SWEEP_DIR
        self.dir.mkdir(parents=True, exist_ok=True)
        self.units = 0  # unit files written by the cells of this run

    def write(self, name: str, rec: dict) -> None:
        with open(self.dir / name, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(rec, default=str) + "\n")


class SweepError(ProbekitError):
    """Some cells of a sweep failed; the others finished and are kept (rerun to retry the failed ones)."""


def _fail(failures: list, what: str, err: BaseException) -> None:
    failures.append((what, err))
    log.error("%s failed: %s: %s", what, type(err).__name__, err)


def _raise_failures(failures: list, n: int) -> None:
    if failures:
        first_what, first_err = failures[0]
        raise SweepError(f"{len(failures)} of {n} sweep step(s) failed; finished cells are kept, rerun the sweep to "
                         f"retry the others. First failure: {first_what}: {type(first_err).__name__}: {first_err}")


def _run_local(plan: SweepPlan, cfg_dict: dict, workers: int, rec: _Log) -> int:
    """Extraction per model first, then the cells. ``workers == 1`` runs in this process (an error stops
    the sweep at once); a pool keeps going past failed cells and raises :class:`SweepError` at the end."""
    pending = plan.pending
    models = plan.pending_models()
    done = 0
    if workers <= 1:
        infos = {}
        for m in models:
            infos[m] = extract_model(cfg_dict, m, plan.data_fp)
            _extracted(rec, infos[m])
        for c in pending:
            if c.kind == "probe":
                res = run_probe_cell(cfg_dict, _cell_dict(c), infos[c.model], plan.data_fp, plan.model_fps[c.model])
            else:
                res = run_baseline_cell(cfg_dict, _cell_dict(c))
            done += 1
            _finished(rec, res, done, len(pending))
        return done
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    threads = max(1, (os.cpu_count() or 1) // workers)
    ctx = multiprocessing.get_context("spawn")  # fork after torch has started threads can deadlock
    failures: list = []
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker, initargs=(threads,))
    try:
        done = _run_pool(pool, cfg_dict, plan, models, pending, rec, failures, done)
    except BaseException:
        # Ctrl-C (or an error here): stop now. Drop the queued cells and end the workers (finished units are on disk;
        # a rerun resumes) instead of the executor's shutdown, which would first run every queued cell.
        procs = list((getattr(pool, "_processes", None) or {}).values())  # shutdown() forgets them
        pool.shutdown(wait=False, cancel_futures=True)
        for proc in procs:
            proc.terminate()
        raise
    pool.shutdown(wait=True)
    _raise_failures(failures, len(pending) + len(models))
    return done


def _run_pool(pool, cfg_dict, plan, models, pending, rec, failures, done) -> int:
    from concurrent.futures import as_completed

    # step 1: every model's extraction (once per model), step 2: the cells
    futs = {pool.submit(extract_model, cfg_dict, m, plan.data_fp): m for m in models}
    infos = {}
    for f in as_completed(futs):
        try:
            infos[futs[f]] = f.result()
            _extracted(rec, infos[futs[f]])
        except Exception as e:  # noqa: BLE001 - reported with the others at the end
            _fail(failures, f"extraction of {futs[f]}", e)
    cell_futs = {}
    for c in pending:
        if c.kind == "probe":
            if c.model not in infos:
                continue  # its extraction failed (reported)
            f = pool.submit(run_probe_cell, cfg_dict, _cell_dict(c), infos[c.model], plan.data_fp,
                            plan.model_fps[c.model])
        else:
            f = pool.submit(run_baseline_cell, cfg_dict, _cell_dict(c))
        cell_futs[f] = c
    for f in as_completed(cell_futs):
        try:
            res = f.result()
        except Exception as e:  # noqa: BLE001
            _fail(failures, cell_futs[f].label, e)
            continue
        done += 1
        _finished(rec, res, done, len(pending))
    return done


def import_ray():
    """``import ray`` with a clear error when the optional extra is missing."""
    try:
        import ray
    except ImportError:
        raise ConfigError("The Ray executor needs Ray: pip install 'probekit[ray]' (or pip install "
                          "'ray[default]>=2.9'), or use --executor local.") from None
    return ray


def _run_ray(plan: SweepPlan, cfg_dict: dict, address: str | None, rec: _Log) -> int:
    ray = import_ray()
    started = False
    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=True)
        started = True
    try:
        gpus = float(ray.cluster_resources().get("GPU", 0))
        gpu = 1 if gpus >= 1 else 0
        log.info("Ray cluster: %s CPUs, %s GPUs; extraction tasks ask for %d GPU",
                 ray.cluster_resources().get("CPU"), gpus, gpu)
        extract_task = ray.remote(num_cpus=1, num_gpus=gpu)(extract_model)
        cell_task = ray.remote(num_cpus=1, num_gpus=0)(run_probe_cell)
        baseline_task = ray.remote(num_cpus=1, num_gpus=gpu)(run_baseline_cell)
        ext = {m: extract_task.remote(cfg_dict, m, plan.data_fp) for m in plan.pending_models()}
        # probe cells are CPU tasks: without an explicit device they run on the CPU
        device = None if cfg_dict.get("device") else "cpu"
        refs = {}
        for c in plan.pending:
            if c.kind == "probe":  # Ray runs a cell once its model's extraction (an argument) is done
                ref = cell_task.remote(cfg_dict, _cell_dict(c), ext[c.model], plan.data_fp, plan.model_fps[c.model],
                                       device)
            else:
                ref = baseline_task.remote(cfg_dict, _cell_dict(c))
            refs[ref] = c
        failures: list = []
        for m, ref in ext.items():
            try:
                _extracted(rec, ray.get(ref))
            except Exception as e:  # noqa: BLE001 - a RayTaskError wrapping the worker's exception
                _fail(failures, f"extraction of {m}", e)
        done, left = 0, list(refs)
        while left:
            ready, left = ray.wait(left, num_returns=1)
            try:
                res = ray.get(ready[0])
            except Exception as e:  # noqa: BLE001
                _fail(failures, refs[ready[0]].label, e)
                continue
            done += 1
            _finished(rec, res, done, len(refs))
        _raise_failures(failures, len(refs) + len(ext))
        return done
    finally:
        if started:
            ray.shutdown()


def _extracted(rec: _Log, info: dict) -> None:
    rec.write("extract.jsonl", {**info, "time": time.time()})
    log.info("extraction %s: %d shard(s) computed in %.1f s (%s)", info["model"], info["computed_shards"],
             info["seconds"], "reused" if info["computed_shards"] == 0 else "new")


def _finished(rec: _Log, res: dict, i: int, n: int) -> None:
    rec.units += int(res.get("computed_units", 0))
    rec.write("cells.jsonl", {**res, "time": time.time()})
    log.info("[%d/%d] %s %s / %s / %s / %s: %d unit(s) in %.1f s", i, n, res["kind"], res["model"], res["task"],
             res["method"], _seeds(res["seeds"]), res["computed_units"], res["seconds"])


@dataclass
class SweepResult:
    """What :func:`run_sweep` returns: the plan it ran, how many cells it computed, the aggregated result."""

    plan: SweepPlan
    computed_cells: int
    result: Any  # probekit.runner.experiment.ExperimentResult
    seconds: float
    computed_units: int = 0

    @property
    def folder(self) -> Path:
        return self.plan.folder


EXECUTORS = ("local", "ray")


def run_sweep(cfg: ExperimentConfig, *, executor: str = "local", workers: int = 1, address: str | None = None,
              progress: bool = True, plan: SweepPlan | None = None) -> SweepResult:
    """Run every unfinished cell of a sweep, then aggregate the experiment's tables and figures.

    Args:
        cfg: the experiment config whose cross product is swept.
        executor: ``local`` (``workers`` processes; 1 = in this process) or ``ray``.
        workers: local worker processes.
        address: Ray cluster address (``auto``, ``ray://host:10001``); default: the running Ray
            instance of this process, else a new local one.
        progress: progress bars in the aggregation step.
        plan: a plan made by :func:`plan_sweep` just before (else it is made here).
    """
    from probekit.runner.experiment import run_experiment

    if executor not in EXECUTORS:
        from probekit.errors import unknown_name

        raise unknown_name("executor", executor, EXECUTORS)
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}.")
    if executor == "ray":
        import_ray()  # fail before any work
    t0 = time.perf_counter()
    plan = plan if plan is not None else plan_sweep(cfg)
    cfg = plan.config  # with absolute paths
    cfg_dict = cfg.to_dict()
    rec = _Log(plan.folder)
    n = 0
    if plan.pending:
        if executor == "local":
            n = _run_local(plan, cfg_dict, workers, rec)
        else:
            n = _run_ray(plan, cfg_dict, address, rec)
    # every unit and baseline run is finished: the runner only reads them back and writes the tables
    result = run_experiment(cfg, progress=progress)
    return SweepResult(plan=plan, computed_cells=n, result=result, seconds=time.perf_counter() - t0,
                       computed_units=rec.units)


def load_sweep_config(path: str | os.PathLike) -> ExperimentConfig:
    """A sweep config is an experiment config: :meth:`ExperimentConfig.from_yaml`."""
    return ExperimentConfig.from_yaml(path)


def run_sweep_cli(args) -> int:
    """``probekit sweep CONFIG [--executor local|ray] [--address A] [--workers N] [--dry-run]``."""
    cfg = load_sweep_config(args.config)
    if args.address and args.executor != "ray":
        raise ConfigError(f"--address {args.address} is for --executor ray; the {args.executor} executor has no "
                          "address.")
    workers = args.workers if args.workers is not None else 1
    plan = plan_sweep(cfg)
    print(plan.describe(workers=workers if args.executor == "local" else 1), flush=True)
    if args.dry_run:
        return 0
    res = run_sweep(cfg, executor=args.executor, workers=workers, address=args.address,
                    progress=not getattr(args, "quiet", False), plan=plan)
    print(f"\n{res.computed_cells} cell(s) ({res.computed_units} unit(s)) computed in {_fmt_s(res.seconds)}; results: {res.folder}/results.csv "
          f"({len(res.result.table)} rows), figures in {res.folder}/figures", flush=True)
    tuning = int((res.result.table["method"] != "probe").sum())
    if tuning:
        print(f"tuning baselines: {tuning} rows in results.csv")
    print(f"tables: probekit report {res.folder}")
    return 0


__all__ = ["Cell", "SweepPlan", "SweepResult", "SweepError", "plan_sweep", "run_sweep", "run_sweep_cli", "extract_model",
           "run_probe_cell", "run_baseline_cell", "resolve_paths", "load_sweep_config", "import_ray", "EXECUTORS"]
