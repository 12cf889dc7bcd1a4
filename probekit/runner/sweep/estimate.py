"""Time estimates for a sweep's cells, from what earlier runs measured; what was never measured is unknown (None),
never guessed.

Each source is read through its owner's public reader:

* probe cells: the rows of finished unit files (:func:`probekit.results.table.load_unit`) in the runner's
  ``<results_dir>/<experiment>/runs/`` folders: per-layer ``train_seconds`` of the fit, the control-task fit and
  MDL of the same model × task × probe, scaled by the labelled training items and the layers;
* extraction: the activation stores in the store folder (:class:`probekit.activations.store.ActivationStore`):
  0 when finished stores of the model hold this very data, else the forward-pass seconds per word recorded in the
  model's other stores × the words to extract;
* baseline cells: ``train_seconds`` of the experiment's earlier run records of the same model × method × task
  (:func:`probekit.baselines.records.iter_runs`);
* study cells: none (unknown).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from probekit.activations.store import STORE_FORMAT, ActivationStore
from probekit.baselines.records import iter_runs
from probekit.config import ExperimentConfig
from probekit.errors import StoreError
from probekit.results.table import is_control, load_unit
from probekit.runner.data import data_checksum
from probekit.runner.sweep.cells import Cell, mdl_seed, seeds_share_a_fit
from probekit.tasks import get_task

#: How many of the newest unit files the probe estimates read.
MAX_UNIT_FILES = 600


def estimate_cells(cfg: ExperimentConfig, folder: Path, cells: list[Cell], models: list[str], data: dict,
                   data_fp: dict) -> dict[str, float | None]:
    """Fill ``estimate_s`` of every unfinished cell; return the extraction estimate of each of ``models``."""
    measured = measured_unit_costs(Path(cfg.results_dir))
    items = {t.name: int((np.asarray(t.encode(data["train"])) >= 0).sum()) for t in map(get_task, cfg.tasks)}
    for c in cells:
        if c.done:
            continue
        if c.kind == "probe":
            c.estimate_s = probe_cell_estimate(cfg, c, items[c.task], measured.get((c.model, c.task, c.method), []))
        elif c.kind == "baseline":
            c.estimate_s = baseline_estimate(folder / "baselines", c)
        # a study cell stays unknown: its units record no cost the sweep could scale
    stores = stores_by_model(Path(cfg.store_dir))
    return {m: extraction_estimate(cfg, m, data_fp, stores.get(m, [])) for m in models}


# ----------------------------------------------------------------------------------------------- probe cells

def unit_costs(rows: list[dict]) -> dict | None:
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
        elif is_control(r.get("control")):
            parts["control"][layer] = float(t)
        else:
            parts["fit"][layer] = float(t)
            size = size or r.get("train_size")
    if not parts["fit"]:
        return None
    out = {k: (sum(v.values()) / len(v) if v else None) for k, v in parts.items()}
    out.update(size=size, n_layers=len(parts["fit"]))
    return out


def measured_unit_costs(results_dir: Path, limit: int = MAX_UNIT_FILES) -> dict[tuple, list[dict]]:
    """:func:`unit_costs` of the newest ``limit`` unit files under ``results_dir/*/runs``, by (model, task, probe)."""
    files = []
    for runs in results_dir.glob("*/runs"):
        for p in runs.glob("*.json"):
            if p.name.startswith("baseline-"):  # a baselines runner's record, not a unit
                continue
            try:
                files.append((p.stat().st_mtime, p))
            except OSError:
                continue
    out: dict[tuple, list[dict]] = {}
    for _, p in sorted(files, reverse=True)[:limit]:
        rows = load_unit(p)  # None for a damaged file
        first = next((r for r in rows or [] if r.get("layer") is not None), None)
        cost = unit_costs(rows) if first is not None else None
        if cost is not None:
            out.setdefault((first["model"], first["task"], first["probe"]), []).append(cost)
    return out


def probe_cell_estimate(cfg: ExperimentConfig, cell: Cell, n_items: int, measured: list[dict]) -> float | None:
    """Seconds for a probe cell: per layer, the fit (once for seeds that share it, else per seed), the control fit
    per seed and MDL on its seed, each the mean of the measured units scaled by ``n_items`` / their training size."""
    if not measured:
        return None

    def mean(key: str, n: int) -> float | None:
        vals = [m[key] * (n / m["size"] if m["size"] else 1.0) for m in measured if m[key] is not None]
        return float(np.mean(vals)) if vals else None

    n_layers = len(cfg.layers) if cfg.layers is not None else max(m["n_layers"] for m in measured)
    n_pool = max(1, len(cell.units) // len(cell.seeds))
    fit, ctrl = mean("fit", n_items), (mean("control", n_items) if cfg.control_tasks else 0.0)
    if ctrl is None:
        return None  # control tasks never measured here: unknown
    n_fits = 1 if seeds_share_a_fit(cfg, cell.method) else len(cell.seeds)
    per_pool = n_fits * fit + len(cell.seeds) * ctrl
    if mdl_seed(cfg, cell.method) in cell.seeds:
        mdl = mean("mdl", min(n_items, cfg.mdl_max_examples or n_items))
        if mdl is None:
            return None  # MDL never measured for this model/task: unknown
        per_pool += mdl
    return per_pool * n_layers * n_pool


# ----------------------------------------------------------------------------------------------- baseline cells

def baseline_estimate(results_dir: Path, cell: Cell) -> float | None:
    """Mean ``train_seconds`` of the finished runs in ``results_dir`` of the same model × method × task, else None."""
    vals = [float(run.rows[0]["train_seconds"]) for run in iter_runs(results_dir)
            if (run.model, run.method, run.task) == (cell.model, cell.method, cell.task)
            and run.rows and run.rows[0].get("train_seconds") is not None]
    return sum(vals) / len(vals) if vals else None


# ----------------------------------------------------------------------------------------------- extraction

def stores_by_model(store_root: Path) -> dict[str, list[ActivationStore]]:
    """The finished stores under ``store_root``, by model name (unfinished or damaged ones are left out)."""
    out: dict[str, list[ActivationStore]] = {}
    for manifest in sorted(store_root.glob("*/manifest.json")) if store_root.is_dir() else []:
        try:
            store = ActivationStore(manifest.parent, verify=False)  # reads the manifest only
        except StoreError:
            continue
        model, data = store.manifest["model"], store.manifest["data"]
        if isinstance(model, dict) and isinstance(data, dict):  # else a damaged manifest: not ours to trust
            out.setdefault(str(model.get("name")), []).append(store)
    return out


def _holds(store: ActivationStore, cfg: ExperimentConfig, fp: dict) -> bool:
    """Whether ``store`` holds the split ``fp`` names, as this config extracts it (format, dtype, word pooling)."""
    m = store.manifest
    return (m.get("format") == STORE_FORMAT and m["dtype"] == cfg.dtype
            and (cfg.word_pooling is None or m["word_pooling"] == cfg.word_pooling)
            and m["data"].get("checksum") == data_checksum(fp) and m["data"].get("n_sentences") == fp["n_sentences"])


def extraction_estimate(cfg: ExperimentConfig, model: str, data_fp: dict, stores: list[ActivationStore]
                        ) -> float | None:
    """0.0 when ``stores`` (the model's finished stores) hold every split of ``data_fp``; else the forward-pass
    seconds per word they recorded × the words of ``data_fp``; None when they recorded none."""
    if all(any(_holds(s, cfg, fp) for s in stores) for fp in data_fp.values()):
        return 0.0
    rates = [s.manifest["stats"]["forward_seconds"] / s.n_words for s in stores
             if s.n_words and (s.manifest.get("stats") or {}).get("forward_seconds")]
    return float(np.mean(rates) * sum(fp["n_words"] for fp in data_fp.values())) if rates else None
