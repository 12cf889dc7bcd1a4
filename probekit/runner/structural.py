"""Structural probes for a config's models: stores -> probes on every layer -> rows of the results table.

:func:`run_structural` is the entry point (``python -m probekit.runner.structural CONFIG``): for each model of an
experiment config (and its random-weights twin), it trains the distance and depth probes of
:mod:`probekit.probing.structural` on all layers of a group at once, scores them on test, and returns rows of the
same results table as the other probes (``probe`` = ``structural`` or ``structural_k<rank>``, metrics ``uuas``,
``dspr``, ``root_acc``, ``nspr``, with ``<metric>_ci_low`` / ``<metric>_ci_high``: a 95% percentile bootstrap over
test sentences), plus rows of the right-branching baseline (``probe`` = ``right_branching``, layer empty) and, when
``control`` is on, of the probe trained on Hewitt & Liang's control structure (``control`` = True).

Settings live in a ``structural:`` section of the experiment YAML (:class:`StructuralConfig`). Finished units
(model x kind x rank x control) are kept under ``results/<experiment>/structural/runs`` and reused by a rerun.
"""
from __future__ import annotations

import io
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from probekit._io import atomic_write_bytes
from probekit.activations.models import fingerprint
from probekit.config import ExperimentConfig, section_settings
from probekit.errors import ConfigError, unknown_name
from probekit.probing.features import layer_groups
from probekit.probing.structural import (
    KINDS,
    METRICS,
    StructuralSettings,
    check_rank,
    fit_score_layers,
    layer_records,
    linear_distances,
    split_targets,
)
from probekit.report.structural_figures import structural_figures
from probekit.results.significance import MIN_RESAMPLES, percentile_interval, resample_indices
from probekit.results.table import load_unit, row, save_unit, to_frames
from probekit.runner.data import load_data, model_list, study_loader
from probekit.runner.study_main import study_main
from probekit.runner.units import study_unit_key

log = logging.getLogger(__name__)

#: Part of every unit's key: bumped when the code changes the numbers it gives.
UNIT_VERSION = 2
#: Test sentences whose predictions are kept for figures (the first ones of the test split).
KEEP_PREDICTIONS = 40
TASK_NAMES = {"distance": "tree_distance", "depth": "tree_depth"}


@dataclass
class StructuralConfig:
    """The ``structural:`` section of an experiment YAML."""

    kinds: list = field(default_factory=lambda: list(KINDS))
    ranks: list = field(default_factory=lambda: [None])  # None = full rank (d_model)
    epochs: int = 40
    batch_size: int = 20
    lr: float = 1e-3
    patience: int = 4
    control: bool = True
    rescale: bool = False  # see StructuralSettings.rescale
    bootstrap: int = 1000
    confidence: float = 0.95

    @classmethod
    def from_dict(cls, d: dict | None, *, source: str = "config") -> "StructuralConfig":
        out = section_settings(cls, d, "structural", source)
        for k in out.kinds:
            if k not in KINDS:
                raise unknown_name("structural probe kind", k, KINDS, ConfigError, hint=f"(in {source})")
        for r in out.ranks:
            if r is not None and (isinstance(r, bool) or not isinstance(r, int) or r < 1):
                raise ConfigError(f"{source}: structural 'ranks' must be positive integers or null (full rank), "
                                  f"got {out.ranks!r}.")
        if out.bootstrap and out.bootstrap < MIN_RESAMPLES:
            raise ConfigError(f"{source}: structural 'bootstrap' is {out.bootstrap}; use 0 (no intervals) or at least "
                              f"{MIN_RESAMPLES} resamples (1000 is the default).")
        return out

    def settings(self, rank: int | None, seed: int, device: str | None) -> StructuralSettings:
        return StructuralSettings(rank=rank, epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                                  patience=self.patience, seed=seed, device=device, rescale=self.rescale)


def load_structural_config(path: str | Path) -> tuple[ExperimentConfig, StructuralConfig]:
    """An experiment YAML with a ``structural:`` section -> (experiment config, structural settings)."""
    cfg = ExperimentConfig.from_yaml(path)
    return cfg, StructuralConfig.from_dict(cfg.structural, source=str(path))


def probe_name(rank: int | None) -> str:
    return "structural" if rank is None else f"structural_k{rank}"


def bootstrap_ci(records: dict, kind: str, *, n: int, confidence: float = 0.95, seed: int = 0) -> dict:
    """Percentile bootstrap CI of each metric over test sentences: ``{metric: (low, high)}``.

    Each replicate resamples the sentences with replacement and recomputes the metric as the paper does (UUAS over
    the pooled edges, DSpr averaged per length then over lengths), so the interval is that of the reported number.
    """
    metrics_fn = METRICS[kind][1]
    reps = [metrics_fn(records, idx) for idx in resample_indices(len(records["length"]), n, seed)]
    return {m: percentile_interval([r[m] for r in reps], confidence) for m in reps[0]}


@dataclass
class StructuralResult:
    """What :func:`run_structural` returns: the rows and, per unit, the test records and kept predictions."""

    rows: list
    records: dict  # (model, kind, probe, control) -> {"layers": [...], "records": [per-layer dict], "preds": [...]}
    test_sentences: list = field(default_factory=list, repr=False)  # the test split (the order of the records)

    def table(self):
        return to_frames(self.rows)[0]

    @classmethod
    def merge(cls, parts: list["StructuralResult"]) -> "StructuralResult":
        """One result of the parts of one run (e.g. one per model): their rows and records together."""
        return cls(rows=[r for p in parts for r in p.rows], records={k: v for p in parts for k, v in p.records.items()},
                   test_sentences=parts[0].test_sentences if parts else [])


def _save_records(path: Path, layers: list[int], records: list[dict], preds: list[np.ndarray]) -> None:
    arrays = {f"L{layer}__{k}": v for layer, rec in zip(layers, records) for k, v in rec.items()}
    arrays.update({f"pred{i}": p for i, p in enumerate(preds)})
    buf = io.BytesIO()
    np.savez_compressed(buf, layers=np.asarray(layers), **arrays)
    atomic_write_bytes(path, buf.getvalue())


def load_records(path: Path) -> dict | None:
    """A unit's saved test records (``{"layers", "records", "preds"}``), or None when missing or unreadable."""
    try:
        with np.load(path, allow_pickle=False) as z:
            layers = [int(x) for x in z["layers"]]
            recs = [{k.split("__", 1)[1]: z[k] for k in z.files if k.startswith(f"L{layer}__")} for layer in layers]
            preds = [z[f"pred{i}"] for i in range(sum(k.startswith("pred") for k in z.files))]
    except (OSError, ValueError, KeyError):
        return None
    return {"layers": layers, "records": recs, "preds": preds}


def _rows_for(common: dict, probe: str, control: bool, layer, split_metrics: dict, cis: dict, **extra) -> list[dict]:
    out = []
    for metric, value in split_metrics.items():
        out.append(row(**common, probe=probe, control=control, layer=layer, split="test", metric=metric, value=value,
                       **extra))
        for side, v in zip(("ci_low", "ci_high"), cis.get(metric, ())):
            out.append(row(**common, probe=probe, control=control, layer=layer, split="test",
                           metric=f"{metric}_{side}", value=v, **extra))
    return out


def runs_folder(cfg: ExperimentConfig) -> Path:
    """Where the finished units of the structural study are kept."""
    return Path(cfg.results_dir) / cfg.name / "structural" / "runs"


def plan_structural(cfg: ExperimentConfig, scfg: StructuralConfig, model: str, data_fp: dict) -> list[tuple]:
    """The units of one model: ``(kind, rank, control, key)``."""
    fp = fingerprint(model)
    settings = {k: v for k, v in asdict(scfg).items() if k not in ("kinds", "ranks", "control")
                and not (k == "rescale" and not v)}  # the keys of runs made before `rescale` existed
    return [(kind, rank, ctl, study_unit_key(cfg, fp, data_fp, version=UNIT_VERSION, kind=kind, rank=rank,
                                             control=ctl, seed=cfg.seeds[0], settings=settings))
            for kind in scfg.kinds for rank in scfg.ranks for ctl in ((False, True) if scfg.control else (False,))]


def _finished(folder: Path, key: str, strict: bool = False) -> tuple | None:
    """A unit's (rows, records), or None unless both files are there and sound."""
    rows, recs = load_unit(folder / f"{key}.json", key=key, strict=strict), load_records(folder / f"{key}.npz")
    return None if rows is None or recs is None else (rows, recs)


def unfinished_units(cfg: ExperimentConfig, scfg: StructuralConfig, model: str, data_fp: dict) -> int:
    """How many units of ``model`` are still to compute (the sweep's status of a structural cell)."""
    folder = runs_folder(cfg)
    return sum(_finished(folder, key) is None for *_, key in plan_structural(cfg, scfg, model, data_fp))


def run_structural(cfg: ExperimentConfig, scfg: StructuralConfig | None = None, *, data: dict | None = None,
                   data_fp: dict | None = None, progress: bool = True, models: list[str] | None = None,
                   load: Callable | None = None) -> StructuralResult:
    """Structural probes (and baselines) for every model of ``cfg`` (or of ``models``); see the module docstring.
    ``probekit run`` calls it for a config with a ``structural:`` section, with the data it has loaded and its
    ``load(model, site) -> (lm, stores, info)`` (default :func:`~probekit.runner.data.study_loader`), called only for a
    model with units to compute."""

    scfg = scfg or StructuralConfig()
    folder = runs_folder(cfg)
    if data is None or data_fp is None:
        data, data_fp = load_data(cfg)
    load = load or study_loader(cfg, data, data_fp, progress=progress)
    targets = {(kind, ctl): {role: split_targets(data[role], kind, control_seed=cfg.seeds[0] if ctl else None)
                             for role in ("train", "dev", "test")}
               for kind in scfg.kinds for ctl in ((False, True) if scfg.control else (False,))}
    all_rows, all_records = [], {}
    for m in models if models is not None else model_list(cfg):
        plan = plan_structural(cfg, scfg, m, data_fp)
        done = {key: _finished(folder, key, cfg.strict) for *_, key in plan}
        pending = [p for p in plan if done[p[3]] is None]
        if pending:
            lm, stores, info = load(m)
            n_layers = stores["train"].n_layers
            layers = cfg.layers if cfg.layers is not None else list(range(n_layers))
            d = stores["train"].hidden_size
            words = sum(st.n_words for st in stores.values())
            for kind, rank, ctl, key in pending:
                check_rank(rank, d)
                t0 = time.perf_counter()
                common = dict(experiment=cfg.name, **info, task=TASK_NAMES[kind], task_version=1,
                              level="word_pair" if kind == "distance" else "word", method="probe",
                              pooling=stores["train"].manifest["word_pooling"], n_layers=n_layers - 1,
                              seed=cfg.seeds[0])
                tg = targets[(kind, ctl)]
                rows, recs, kept = [], [], []
                # float16 blocks of train + dev + test under the feature loader's one memory budget
                for group in layer_groups(layers, words, d, itemsize=2):
                    X = {role: stores[role].layers(group, dtype=np.float16) for role in ("train", "dev", "test")}
                    scores = fit_score_layers(X, tg, group, kind=kind, keep=KEEP_PREDICTIONS,
                                              settings=scfg.settings(rank, cfg.seeds[0], cfg.device))
                    secs = (time.perf_counter() - t0) / len(group)
                    for sc in scores:
                        cis = bootstrap_ci(sc.per_sentence, kind, n=scfg.bootstrap, confidence=scfg.confidence,
                                           seed=cfg.seeds[0]) if scfg.bootstrap else {}
                        rows += _rows_for(common, probe_name(rank), ctl, sc.layer, sc.metrics, cis,
                                          trainable_params=sc.n_params, train_size=len(tg["train"].lengths),
                                          train_seconds=secs)
                        recs.append(sc.per_sentence)
                        kept.append(sc.kept_predictions)
                preds = [np.stack([k[i] for k in kept]) for i in range(len(kept[0]))]  # per sentence [L, ...]
                save_unit(folder / f"{key}.json", rows)
                _save_records(folder / f"{key}.npz", layers, recs, preds)
                done[key] = (rows, {"layers": layers, "records": recs, "preds": preds})
                log.info("%s %s %s control=%s: %.1fs", m, kind, probe_name(rank), ctl, time.perf_counter() - t0)
            del lm
        for kind, rank, ctl, key in plan:
            rows, recs = done[key]
            all_rows += rows
            all_records[(m, kind, probe_name(rank), ctl)] = recs
        if "distance" in scfg.kinds:
            all_rows += baseline_rows(targets[("distance", False)]["test"], scfg,
                                      dict(experiment=cfg.name, model=m, task=TASK_NAMES["distance"],
                                           task_version=1, level="word_pair", method="baseline", seed=cfg.seeds[0]))
    return StructuralResult(rows=all_rows, records=all_records, test_sentences=data["test"])


def baseline_rows(test, scfg: StructuralConfig, common: dict) -> list[dict]:
    """Rows of the right-branching chain (each non-punctuation word linked to the next) on the test split."""
    records_fn, metrics_fn = METRICS["distance"]
    rec = layer_records(records_fn(linear_distances(test), test), 0)
    cis = bootstrap_ci(rec, "distance", n=scfg.bootstrap, confidence=scfg.confidence) if scfg.bootstrap else {}
    return _rows_for(common, "right_branching", False, None, metrics_fn(rec), cis, trainable_params=0)


def main(argv: list[str] | None = None) -> int:
    """``python -m probekit.runner.structural CONFIG``: run and write ``results/<name>/structural/results.csv``."""
    return study_main(argv, study="structural", load=load_structural_config, run=run_structural, figures=structural_figures)


if __name__ == "__main__":
    raise SystemExit(main())
