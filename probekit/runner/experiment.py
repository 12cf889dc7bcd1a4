"""The experiment runner: data → stores → probes for every layer → one results table → figures.

Every stage is a public function a notebook can call alone; :func:`run_experiment` chains them
and is what ``probekit run CONFIG`` calls.

Work is cut into *units* (model × task × pooling × probe × seed, all layers together; see
:mod:`probekit.runner.units`), probed by :func:`probekit.runner.probe_task.probe_task`. A unit's
rows are written atomically to ``results/<experiment>/runs/<key>.json``, keyed by the content of
everything that produced them, so a rerun (or a resumed, killed run) recomputes nothing finished
and loads no model when all its units are done.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from probekit._io import acquire_lock, atomic_write_bytes
from probekit.activations.models import ModelName, fingerprint
from probekit.baselines.config import BaselineConfig
from probekit.baselines.train import run_baselines
from probekit.config import ExperimentConfig
from probekit.errors import DataError
from probekit.probing.features import FeatureCache
from probekit.report import figures
from probekit.report.tables import best_layer_table, summarize
from probekit.results.analysis import analyse
from probekit.results.table import (
    begin_folder_write,
    commit_folder,
    load_unit,
    provenance,
    save_unit,
    to_frames,
    write_csv,
)
from probekit.runner.data import RunModels, load_data, model_list
from probekit.runner.probe_task import probe_task
from probekit.runner.studies import present as present_studies
from probekit.runner.units import ProbePolicy, Unit, plan_units
from probekit.tasks import get_task
from probekit.tracking import log_experiment

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------------------------- runner

@dataclass
class ExperimentResult:
    """What :func:`run_experiment` returns: the tidy table, its summary and where files went."""

    config: ExperimentConfig
    folder: Path
    table: object  # pandas.DataFrame
    summary: object  # pandas.DataFrame
    figures: list[Path]
    forward_passes: int = 0

    def __repr__(self) -> str:
        return (f"ExperimentResult({self.config.name!r}, rows={len(self.table)}, models={self.table['model'].nunique()}, "
                f"tasks={self.table['task'].nunique()}, folder={str(self.folder)!r})")

    def _repr_html_(self) -> str:

        return (f"<p><b>{self.config.name}</b>: {len(self.table)} rows in {self.folder}</p>"
                + best_layer_table(self.summary).to_html(index=False))


def run_experiment(cfg: ExperimentConfig, *, progress: bool = True) -> ExperimentResult:
    """Run (or resume) an experiment end to end and write its results folder."""

    t_start = time.time()
    folder = Path(cfg.results_dir) / cfg.name
    runs = folder / "runs"  # created by the first unit written: a run that fails on its input leaves no folder
    # but an unusable results_dir (a file, no permission) fails now, not after the extraction and the probes
    Path(cfg.results_dir).mkdir(parents=True, exist_ok=True)
    tasks = [get_task(t) for t in cfg.tasks]
    studies = present_studies(cfg)  # the optional study sections' settings: their errors before any work
    data, data_fp = load_data(cfg)
    # a second run of the same experiment waits, then reuses the first one's units instead of computing them again
    lock = acquire_lock(Path(cfg.results_dir) / f".{cfg.name}.lock", f"The results folder {folder}", DataError)
    try:
        _remove_temporaries(folder)
        return _run_locked(cfg, folder, runs, tasks, data, data_fp, t_start, progress, studies)
    finally:
        lock.release()


def _remove_temporaries(folder: Path) -> None:
    """Delete the half-written files (``.<name>.*.tmp``) that a killed run left in the results folder (called under
    the folder's lock, so no other run of this experiment is writing them)."""
    for sub in (folder, folder / "runs", folder / "baselines" / "runs"):
        for tmp in sub.glob(".*.tmp") if sub.is_dir() else ():
            tmp.unlink(missing_ok=True)


def _run_locked(cfg, folder, runs, tasks, data, data_fp, t_start, progress, studies) -> ExperimentResult:
    all_rows: list[dict] = []
    unit_keys: list[str] = []
    models_info = {}
    forward_passes = 0
    policy = ProbePolicy.from_config(cfg)
    # each model is loaded at most once, when some unit needs it, and shared by the probes and every study section;
    # the work goes model by model, and a model is released before the next one is loaded
    loaded = RunModels(cfg, data, data_fp, progress=progress)
    parts: dict[str, list] = {study.section: [] for study, _ in studies}
    for m in model_list(cfg):
        fp = fingerprint(m)
        units = plan_units(cfg, m, fp, data_fp)
        pending: list[Unit] = []
        unit_rows: dict[Unit, list[dict]] = {}
        for u in units:
            rows = load_unit(runs / f"{u.key}.json", key=u.key, strict=cfg.strict)
            if rows is None:
                pending.append(u)
            else:
                unit_rows[u] = rows
        models_info[m] = {"fingerprint": fp}
        if pending:
            log.info("%s: %d of %d units to compute", m, len(pending), len(units))
            lm = loaded.model(m)
            site_stores = loaded.site_stores(m)
            forward_passes += max(sum(st.computed_shards for st in stores.values()) for stores in site_stores.values())
            info = {"name": m, "kind": lm.kind, "hash": lm.weights_hash}
            first = site_stores[cfg.sites[0]]
            models_info[m].update({"kind": lm.kind, "weights_hash": lm.weights_hash, "num_layers": lm.num_layers,
                                   "stores": {r: str(s.path) for r, s in first.items()},
                                   "precision": first["train"].manifest["extraction"]["amp"] or "fp32",
                                   "weights_dtype": cfg.weights_dtype})
            if len(site_stores) > 1:
                models_info[m]["site_stores"] = {site: {r: str(s.path) for r, s in stores.items()}
                                                 for site, stores in site_stores.items()}
            for site, stores in site_stores.items():
                feature_cache = FeatureCache()  # one site's features at a time: its blocks go with it
                for task in tasks:
                    tunits = [u for u in pending if u.task == task.name and u.site == site]
                    if not tunits:
                        continue
                    t0 = time.perf_counter()
                    done = probe_task(lm_info=info, stores=stores, data=data, task=task, policy=policy, units=tunits,
                                      feature_cache=feature_cache, predictions_dir=runs,
                                      progress=progress)
                    for u in tunits:
                        save_unit(runs / f"{u.key}.json", done[u])
                    unit_rows.update(done)
                    log.info("%s %s %s: probed in %.1fs", m, site, task.name, time.perf_counter() - t0)
            del lm, feature_cache
        for u in units:
            all_rows.extend(unit_rows[u])
        unit_keys += [u.key for u in units]
        for study, settings in studies:
            if m in study.models(cfg):
                parts[study.section].append(study.run(cfg, settings, data=data, data_fp=data_fp, models=[m],
                                                      load=loaded.study, progress=progress))
        loaded.release(m)
    if cfg.baselines:
        all_rows.extend(run_config_baselines(cfg, data, progress=progress))
    outputs = [(study, study.combine(cfg, settings, parts[study.section])) for study, settings in studies]
    for _, out in outputs:
        all_rows.extend(out.rows)
    df, timings = to_frames(all_rows)
    # the folder's files are one commit: .writing marks it open until committed.json lists them (results/table.py)
    begin_folder_write(folder)
    write_csv(df, folder / "results.csv")
    if timings is not None:
        write_csv(timings, folder / "timings.csv")
    else:
        (folder / "timings.csv").unlink(missing_ok=True)
    # sentence-level intervals, significance between layers and models, error analysis (results/analysis.py)
    summary = analyse(folder, unit_keys, data, tasks, summarize(df))
    write_csv(summary, folder / "summary.csv")
    prov = provenance(cfg.to_dict(), data=data_fp, models=models_info,
                      tasks={t.name: {"version": t.version, "fingerprint": t.fingerprint, "file": t.source}
                             for t in tasks})
    atomic_write_bytes(folder / "provenance.json", json.dumps(prov, indent=1, default=str).encode())
    # the resolved config: `probekit run <folder>/config.yaml` runs this experiment again
    atomic_write_bytes(folder / "config.yaml", cfg.to_yaml().encode())
    figs = figures.experiment_figures(df, summary, folder, formats=cfg.figures)
    for study, out in outputs:
        if study.figures is not None:
            figs += study.figures(cfg, out, df, folder / "figures")
    commit_folder(folder, ["results.csv", "timings.csv", "summary.csv", "provenance.json", "config.yaml"])
    _append_run_log(folder, {"started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t_start)),
                             "seconds": round(time.time() - t_start, 2), "forward_passes": forward_passes})
    result = ExperimentResult(config=cfg, folder=folder, table=df, summary=summary, figures=figs,
                              forward_passes=forward_passes)
    if cfg.track:
        log_experiment(result)
    return result


def _append_run_log(folder: Path, entry: dict) -> None:
    """Keep a log of runs (wall time, forward passes) beside the results (not part of results.csv)."""

    path = folder / "run_log.json"
    try:
        runs = json.loads(path.read_bytes().decode("utf-8")) if path.is_file() else []
    except (OSError, ValueError):  # ValueError covers JSONDecodeError and UnicodeDecodeError
        log.warning("%s is damaged; starting a new run log", path)
        runs = []
    if not isinstance(runs, list):
        runs = []
    runs.append(entry)
    atomic_write_bytes(path, json.dumps(runs, indent=1).encode())


def run_config_baselines(cfg: ExperimentConfig, data: dict, *, progress: bool = False) -> list[dict]:
    """The config's fine-tuning / lightweight-tuning baselines, as rows of the same table.

    Each finished run is kept under ``results/<experiment>/baselines/runs`` and skipped on a rerun.
    """

    bcfg = BaselineConfig.from_dict(cfg.baselines)

    word_tasks = [t for t in cfg.tasks if get_task(t).level == "word"]  # baselines tag words only
    if not word_tasks:
        return []
    return run_baselines(models=[m for m in cfg.models if not ModelName.parse(m).is_random], tasks=word_tasks, seeds=list(cfg.seeds),
                         config=bcfg, train=data["train"], dev=data["dev"], test=data["test"],
                         results_dir=Path(cfg.results_dir) / cfg.name / "baselines", device=cfg.device,
                         experiment=cfg.name, progress=progress)
