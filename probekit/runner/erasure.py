"""The erasure study of a config: for every model x task, erasers per layer, the sanity probes, and the effects of
erasing on the model, as rows of the results table.

A config is an experiment config (``probekit.config.ExperimentConfig``: models, tasks, layers, data...) with one
more section, ``erasure:`` (:class:`ErasureSettings`). The stores are the experiment's (:func:`~probekit.runner.
data.extract_site_stores`), so a probing run and an erasure run of the same config extract once. Erasers are saved
to ``<results_dir>/<name>/erasers/`` and reused when the model, task, data and settings are the same; the rows of
each finished model x task are kept under ``<results_dir>/<name>/erasure/runs/`` and reused by a rerun (or a sweep's
aggregation), which then loads no model.

Rows (``method`` column): ``erasure:<method>`` for the sanity probes (:mod:`probekit.causal.sanity`),
``intervention:<method>`` for the effects (:mod:`probekit.causal.effects`; ``control`` = True for the
random-subspace control).
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from probekit.activations.models import fingerprint
from probekit.causal.effects import intervention_effects
from probekit.causal.erasure import (
    METHODS,
    fit_erasers,
    labelled_rows,
    layer_features,
    load_erasers,
)
from probekit.causal.intervene import lm_head_weight
from probekit.causal.sanity import sanity_scores
from probekit.config import ExperimentConfig, section_settings
from probekit.errors import ConfigError, unknown_name
from probekit.keys import content_key
from probekit.probing.linear import fit_layers
from probekit.results.table import load_unit, save_unit, to_frames, write_csv
from probekit.runner.data import data_checksum, load_data, study_loader
from probekit.runner.units import study_unit_key
from probekit.tasks import get_task

log = logging.getLogger(__name__)

#: Part of every unit's key: bumped when the code changes the numbers (or the rows) it gives (2: the intervention
#: runs in extraction's batches, with the config's pooling and precision; later layers only at the `later` offsets).
UNIT_VERSION = 2


@dataclass
class ErasureSettings:
    """The ``erasure:`` section of a config."""

    method: str = field(default="leace", metadata={"help": "leace (default) or inlp."})
    effect_sentences: int | None = field(default=200, metadata={
        "help": "How many test sentences (the first ones) the model is run on with each layer erased; null = all."})
    later: list = field(default_factory=lambda: [1, 2], metadata={
        "help": "Offsets k: the other tasks' probes are scored at layer l + k after erasing at layer l."})
    sanity_mlp: bool = field(default=True, metadata={"help": "Also train an MLP probe on the erased features."})
    control_seed: int = field(default=0, metadata={"help": "Seed of the random-subspace control."})
    layers: list | None = field(default=None, metadata={
        "help": "Layers to erase, among those the config stores; null = every layer the config stores."})

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise unknown_name("erasure method", self.method, METHODS, hint="(config key 'erasure.method')")
        if self.effect_sentences is not None and int(self.effect_sentences) < 1:
            raise ConfigError(f"erasure.effect_sentences must be >= 1 or null, got {self.effect_sentences}.")
        if any(not isinstance(k, int) or k < 1 for k in self.later):
            raise ConfigError(f"erasure.later must list positive layer offsets, got {self.later}.")
        if self.layers is not None and (not self.layers or any(isinstance(k, bool) or not isinstance(k, int) or k < 0
                                                               for k in self.layers)):
            raise ConfigError(f"erasure.layers must be null (the config's layers) or a non-empty list of layer "
                              f"numbers >= 0, got {self.layers!r}.")

    @classmethod
    def from_dict(cls, section: dict | None, source: str = "the config") -> "ErasureSettings":
        """Settings from a config's ``erasure:`` mapping; an unknown key is a ConfigError naming it."""
        return section_settings(cls, section, "erasure", source)


def load_erasure_config(path: str | Path) -> tuple[ExperimentConfig, ErasureSettings]:
    """(experiment config, erasure settings) from a YAML file with an ``erasure:`` section."""
    cfg = ExperimentConfig.from_yaml(path)
    return cfg, ErasureSettings.from_dict(cfg.erasure, source=str(path))


def run_erasure(cfg: ExperimentConfig, settings: ErasureSettings, *, data: dict | None = None, fp: dict | None = None,
                progress: bool = True) -> list[dict]:
    """Every row of the erasure study (models x tasks x layers); also written to ``<results>/<name>/erasure.csv``.

    ``probekit run`` calls :func:`erasure_rows` (per model) and :func:`write_erasure_table` instead, with the data it
    has loaded and the models it has loaded.
    """

    if data is None or fp is None:
        data, fp = load_data(cfg)
    rows = erasure_rows(cfg, settings, data=data, fp=fp, progress=progress)
    write_erasure_table(cfg, rows)
    return rows


def erasure_rows(cfg: ExperimentConfig, settings: ErasureSettings, *, data: dict, fp: dict, progress: bool = True,
                 models: list[str] | None = None, load: Callable | None = None) -> list[dict]:
    """The rows of the erasure study for the config's models (or ``models``: real models only, as the config's).
    ``load(model, site) -> (lm, stores, info)`` (default :func:`~probekit.runner.data.study_loader`) gives the model and
    its stores."""
    load = load or study_loader(cfg, data, fp, progress=progress)
    folder = Path(cfg.results_dir) / cfg.name
    runs = runs_folder(cfg)
    rows: list[dict] = []
    timings = []
    tasks = [get_task(t) for t in cfg.tasks]
    for model in models if models is not None else cfg.models:
        plan = plan_erasure(cfg, settings, model, fp)
        done = {key: load_unit(runs / f"{key}.json", key=key, strict=cfg.strict) for key in plan.values()}
        if any(v is None for v in done.values()):
            t0 = time.perf_counter()
            lm, stores, _ = load(model)
            timings.append({"model": model, "stage": "load and extract", "seconds": time.perf_counter() - t0})
            for task in tasks:
                key = plan[task.name]
                if done[key] is not None:
                    continue
                t0 = time.perf_counter()
                done[key] = erase_task(cfg, settings, lm, stores, data, fp, task, [t for t in tasks if t is not task],
                                       folder)
                save_unit(runs / f"{key}.json", done[key])
                timings.append({"model": model, "stage": f"erasure:{task.name}", "seconds": time.perf_counter() - t0})
        for task in tasks:
            rows += done[plan[task.name]]
    log.info("erasure study %s: %d rows; times %s", cfg.name, len(rows), json.dumps(timings))
    return rows


def runs_folder(cfg: ExperimentConfig) -> Path:
    """Where the finished units (model x task) of the erasure study are kept."""
    return Path(cfg.results_dir) / cfg.name / "erasure" / "runs"


def plan_erasure(cfg: ExperimentConfig, settings: ErasureSettings, model: str, data_fp: dict) -> dict[str, str]:
    """The units of one model: ``{task name: key}``. A unit's rows depend on its task and on the other tasks (their
    probes score the effects), the settings, the probes' C grid and MLP settings and the vectors (the erasers'
    own key, :func:`erase_task`, is a subset of it)."""
    fp = fingerprint(model)
    tasks = [get_task(t) for t in cfg.tasks]
    return {task.name: study_unit_key(cfg, fp, data_fp, version=UNIT_VERSION,
                                      task=[task.name, task.version, task.fingerprint],
                                      others=[[t.name, t.version, t.fingerprint] for t in tasks if t is not task],
                                      settings=asdict(settings), Cs=list(cfg.Cs), mlp=cfg.mlp)
            for task in tasks}


def unfinished_units(cfg: ExperimentConfig, settings: ErasureSettings, model: str, data_fp: dict) -> int:
    """How many units of ``model`` are still to compute (the sweep's status of an erasure cell)."""
    runs = runs_folder(cfg)
    return sum(load_unit(runs / f"{key}.json", key=key) is None
               for key in plan_erasure(cfg, settings, model, data_fp).values())


def write_erasure_table(cfg: ExperimentConfig, rows: list[dict]) -> None:
    """The erasure study's rows as ``<results>/<name>/erasure.csv``."""
    df, _ = to_frames(rows)
    write_csv(df, Path(cfg.results_dir) / cfg.name / "erasure.csv")


def erase_task(cfg: ExperimentConfig, settings: ErasureSettings, lm, stores: dict, data: dict, fp: dict, task,
               others: list, folder: Path) -> list[dict]:
    """Rows of one model x task: fit (or reuse) the erasers, the sanity probes, the intervention effects."""

    stored = stores["train"].layer_ids
    layers = [stores["train"]._check_layer(k) for k in (settings.layers if settings.layers is not None else stored)]
    pooling = "mean" if task.level == "sentence" else None
    key = content_key("eraser", [lm.identity, {r: data_checksum(fp[r]) for r in fp}, task.name, task.version,
                                 task.fingerprint, layers, settings.method, pooling])
    path = folder / "erasers" / f"{Path(lm.name).name}-{task.name}-{settings.method}-{key}.erasers"
    if path.is_file():
        erasers = load_erasers(path, weights_hash=lm.weights_hash, task=task.name)
    else:
        erasers = fit_erasers(stores["train"], task, data["train"], layers=layers, method=settings.method,
                              pooling=pooling, dev_store=stores["dev"], dev_sentences=data["dev"],
                              weights_hash=lm.weights_hash, device=cfg.device)
        erasers.save(path)
    common = dict(experiment=cfg.name, model=lm.name, model_kind=lm.kind, model_hash=lm.weights_hash[:16],
                  task=task.name, task_version=task.version, level=task.level, pooling=erasers.pooling,
                  n_layers=lm.num_layers, seed=0)
    out: list[dict] = []
    for s in sanity_scores(erasers, stores, data, task, mlp=settings.sanity_mlp, Cs=cfg.Cs, device=cfg.device,
                           mlp_params=cfg.mlp):
        out += s.rows(**common)
    if task.level != "word":  # the intervention edits word positions; a sentence task has none to edit
        return out
    sents = data["test"][:settings.effect_sentences] if settings.effect_sentences else data["test"]
    y_train = labelled_rows(task, data["train"])[1]
    majority = int(np.bincount(y_train, minlength=len(task.labels)).argmax())
    probes = {}
    # the later layers the store holds (a config's `layers:` subset leaves some out)
    wanted = sorted({k + o for k in layers for o in settings.later} & set(stores["train"].layer_ids))
    for other in (t for t in others if t.level == "word"):
        rows_tr, y_tr = labelled_rows(other, data["train"])
        rows_dev, y_dev = labelled_rows(other, data["dev"])
        fits = {}
        for k in wanted:  # one layer's features in memory at a time
            f = fit_layers(layer_features(stores["train"], k, rows_tr, "word", None)[None], y_tr,
                           n_classes=len(other.labels), Cs=tuple(cfg.Cs),
                           X_dev=layer_features(stores["dev"], k, rows_dev, "word", None)[None], y_dev=y_dev,
                           device=cfg.device)[0]
            fits[k] = f
        probes[other.name] = (other.encode(sents), fits)
    head = lm_head_weight(lm) if lm.kind == "decoder" else None
    effects = intervention_effects(lm, sents, task.encode(sents), erasers.erasers, majority=majority, head=head,
                                   probes=probes, control_seed=settings.control_seed, batch_tokens=cfg.batch_tokens,
                                   word_pooling=cfg.word_pooling, precision=cfg.precision, offsets=settings.later)
    for e in effects:
        out += e.rows(**common, method=f"intervention:{erasers.method}")
    return out
