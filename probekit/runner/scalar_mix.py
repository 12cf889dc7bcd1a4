"""Tenney's scalar mix and cumulative scoring for a config's models: stores -> probes -> rows of the results table.

A config with a ``scalar_mix:`` section (:class:`ScalarMixConfig`) gets, from ``probekit run``, for each model (and
its random-weights twin), word-level task and seed, the probes of :func:`probekit.probing.scalar_mix.fit_mix` on the
mix of layers ``0..l`` for every ``l`` (one batched problem), scored on test. Rows (layer 0 = embeddings):

* ``probe`` = ``scalar_mix_cumulative``, ``layer`` = l: the probe on the mix of layers 0..l (cumulative scoring):
  test ``accuracy``, ``macro_f1`` (and ``pos_f1`` on a binary task), each with ``<metric>_ci_low`` /
  ``<metric>_ci_high``; dev ``accuracy``; ``reg`` = the chosen inverse L2 strength C.
* ``probe`` = ``scalar_mix``, ``layer`` empty: the full-mix probe's test scores (the prefix 0..L) with their
  intervals; ``gain`` = Score(P^(L)) - Score(P^(0)); ``expected_layer`` = Tenney's E_Delta[l] from the cumulative
  scores, NaN unless the gain's interval lies above 0; ``center_of_gravity`` = E_s[l] of the mixing weights.
* ``probe`` = ``scalar_mix``, ``layer`` = l: ``mix_weight`` (split train: a learned parameter), the weight s^(l) of
  layer l in the full mix; ``delta`` (split test), the differential score Delta^(l) for l >= 1.

Score = the section's ``metric`` (accuracy by default). Every interval is a 95% percentile bootstrap over test
sentences (:mod:`probekit.results.significance`; 1000 resamples, seed 0, the same resamples for every prefix, so the
gain and the expected layer are paired). Finished units (model x task x seed) are kept under
``results/<experiment>/scalar_mix/runs`` and reused by a rerun. Definitions and the differences from Tenney et al.:
docs/scalar_mix.md.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from probekit.activations.models import fingerprint
from probekit.config import ExperimentConfig, section_settings
from probekit.errors import ConfigError, unknown_name
from probekit.probing.features import ROLES, FeatureCache
from probekit.probing.scalar_mix import CUMULATIVE_PROBE, MIX_PROBE, MixSettings, fit_mix
from probekit.results import predictions
from probekit.results.significance import (
    METRICS,
    MIN_RESAMPLES,
    bootstrap_interval,
    resample_weights,
    sentence_counts,
)
from probekit.results.stats import center_of_gravity, cumulative_summary
from probekit.results.table import load_unit, row, save_unit
from probekit.runner.data import load_data, model_list, study_loader
from probekit.runner.probe_task import labelled_items
from probekit.runner.units import ProbePolicy, study_unit_key
from probekit.tasks import get_task

log = logging.getLogger(__name__)

#: Part of every unit's key: bumped when the code changes the numbers it gives.
UNIT_VERSION = 2


@dataclass
class ScalarMixConfig:
    """The ``scalar_mix:`` section of an experiment YAML."""

    tasks: list | None = field(default=None, metadata={
        "help": "Word-level tasks to run it on (default: every word-level task of the experiment)."})
    Cs: list | None = field(default=None, metadata={
        "help": "Inverse L2 strengths tried, chosen per prefix on dev accuracy (each one more problem in the batch); "
                "null = the experiment's Cs."})
    metric: str = field(default="accuracy", metadata={
        "help": "The Score of the cumulative scores, the gain and the expected layer: accuracy, macro_f1 or pos_f1 "
                "(binary tasks)."})
    lr: float = field(default=0.01, metadata={"help": "Adam learning rate."})
    batch_size: int = field(default=256, metadata={"help": "Words per minibatch."})
    max_epochs: int = field(default=30, metadata={"help": "At most this many passes over the training words."})
    patience: int = field(default=3, metadata={"help": "Stop when no prefix's dev loss improved for this many epochs."})
    standardize: bool = field(default=True, metadata={
        "help": "Standardise each layer (train mean and scale) before mixing; false mixes the raw vectors "
                "(Tenney et al.)."})
    bootstrap: int = field(default=1000, metadata={"help": "Sentence-bootstrap resamples of the intervals."})
    confidence: float = field(default=0.95, metadata={"help": "Level of the intervals."})

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise unknown_name("scalar_mix metric", self.metric, METRICS, ConfigError, hint="(key 'scalar_mix.metric')")
        if isinstance(self.bootstrap, bool) or not isinstance(self.bootstrap, int) or self.bootstrap < MIN_RESAMPLES:
            raise ConfigError(f"scalar_mix.bootstrap must be an integer >= {MIN_RESAMPLES} (the intervals decide "
                              f"whether an expected layer exists), got {self.bootstrap!r}.")
        if not 0 < self.confidence < 1:
            raise ConfigError(f"scalar_mix.confidence must be in (0, 1), got {self.confidence!r}.")
        if self.tasks is not None and (not isinstance(self.tasks, list) or not self.tasks):
            raise ConfigError(f"scalar_mix.tasks must be a non-empty list of task names or null, got {self.tasks!r}.")
        if self.Cs is not None and (not isinstance(self.Cs, list) or not self.Cs):
            raise ConfigError(f"scalar_mix.Cs must be a non-empty list of positive numbers or null, got {self.Cs!r}.")
        self.settings(0, None, [1.0])  # the training settings' own checks, now

    @classmethod
    def from_dict(cls, d: dict | None, *, source: str = "the config") -> "ScalarMixConfig":
        """Settings from a config's ``scalar_mix:`` mapping; an unknown key is a ConfigError naming it."""
        return section_settings(cls, d, "scalar_mix", source)

    def settings(self, seed: int, device: str | None, experiment_Cs) -> MixSettings:
        """The training settings; ``experiment_Cs``: the experiment's grid, used when the section names none."""
        return MixSettings(Cs=tuple(self.Cs if self.Cs is not None else experiment_Cs), lr=self.lr, batch_size=self.batch_size, max_epochs=self.max_epochs,
                           patience=self.patience, standardize=self.standardize, seed=seed, device=device)

    def task_names(self, cfg: ExperimentConfig) -> list[str]:
        """The tasks it runs on; a sentence-level or binary-only metric mismatch is a ConfigError."""
        names = self.tasks if self.tasks is not None else [t for t in cfg.tasks if get_task(t).level == "word"]
        for name in names:
            task = get_task(name)
            if task.level != "word":
                raise ConfigError(f"scalar_mix.tasks: {name!r} is a {task.level}-level task; the scalar mix runs on "
                                  "word-level tasks (leave it out, or drop scalar_mix.tasks to take the config's word "
                                  "tasks).")
            if self.metric == "pos_f1" and len(task.labels) != 2:
                raise ConfigError(f"scalar_mix.metric pos_f1 is the F1 of the positive class of a binary task; "
                                  f"{name!r} has {len(task.labels)} labels. Use accuracy or macro_f1.")
        return names


def runs_folder(cfg: ExperimentConfig) -> Path:
    """Where the finished units of the scalar-mix study are kept."""
    return Path(cfg.results_dir) / cfg.name / "scalar_mix" / "runs"


def plan_scalar_mix(cfg: ExperimentConfig, mcfg: ScalarMixConfig, model: str, data_fp: dict) -> list[tuple]:
    """The units of one model: ``(task, seed, key)``."""
    fp = fingerprint(model)
    settings = {k: v for k, v in asdict(mcfg).items() if k != "tasks"}
    return [(task, seed, study_unit_key(
        cfg, fp, data_fp, version=UNIT_VERSION, task=task.name, task_version=task.version, task_fp=task.fingerprint,
        labels=task.labels, seed=seed, Cs=mcfg.Cs if mcfg.Cs is not None else cfg.Cs, max_train=cfg.max_train_items,
        settings=settings)) for task in (get_task(t) for t in mcfg.task_names(cfg)) for seed in cfg.seeds]


def unfinished_units(cfg: ExperimentConfig, mcfg: ScalarMixConfig, model: str, data_fp: dict) -> int:
    """How many units of ``model`` are still to compute (the sweep's status of a scalar-mix cell)."""
    folder = runs_folder(cfg)
    return sum(load_unit(folder / f"{key}.json", key=key) is None
               for *_, key in plan_scalar_mix(cfg, mcfg, model, data_fp))


def run_scalar_mix(cfg: ExperimentConfig, mcfg: ScalarMixConfig | None = None, *, data: dict | None = None,
                   data_fp: dict | None = None, progress: bool = True, models: list[str] | None = None,
                   load: Callable | None = None) -> list[dict]:
    """Every row of the scalar-mix study (module docstring) for every model of ``cfg`` (or of ``models``).
    ``probekit run`` calls it for a config with a ``scalar_mix:`` section, with the data it has loaded and its
    ``load(model, site) -> (lm, stores, info)`` (default :func:`~probekit.runner.data.study_loader`), called only for a
    model with units to compute."""

    mcfg = mcfg or ScalarMixConfig()
    if not mcfg.task_names(cfg):
        log.info("scalar_mix: the config has no word-level task; nothing to run")
        return []
    if data is None or data_fp is None:
        data, data_fp = load_data(cfg)
    load = load or study_loader(cfg, data, data_fp, progress=progress)
    folder = runs_folder(cfg)
    policy = ProbePolicy.from_config(cfg)
    out: list[dict] = []
    for m in models if models is not None else model_list(cfg):
        plan = plan_scalar_mix(cfg, mcfg, m, data_fp)
        done = {key: load_unit(folder / f"{key}.json", key=key, strict=cfg.strict) for *_, key in plan}
        pending = [p for p in plan if done[p[2]] is None]
        if pending:
            lm, stores, info = load(m)
            cache = FeatureCache()
            for task, seed, key in pending:
                t0 = time.perf_counter()
                rows = _task_rows(cfg, mcfg, task, seed, stores, data, policy, info, cache)
                save_unit(folder / f"{key}.json", rows)
                done[key] = rows
                log.info("%s %s seed %d: scalar mix and cumulative scoring in %.1fs", m, task.name, seed,
                         time.perf_counter() - t0)
            del lm, cache
        for *_, key in plan:
            out += done[key]
    return out


def _task_rows(cfg, mcfg: ScalarMixConfig, task, seed: int, stores: dict, data: dict, policy: ProbePolicy,
               info: dict, cache: FeatureCache) -> list[dict]:
    items = labelled_items(task, data, policy)
    n_layers = stores["train"].n_layers
    layers = list(range(n_layers))  # cumulative scoring needs every prefix 0..l: all layers, whatever `layers` says
    X = {role: cache.get(stores[role], layers, items[role].rows, "word", None) for role in ROLES}
    y = {role: items[role].y for role in ROLES}
    n_classes = len(task.labels)
    t0 = time.perf_counter()
    fit = fit_mix(X, y, n_classes=n_classes, layers=layers, settings=mcfg.settings(seed, cfg.device, cfg.Cs))
    secs = time.perf_counter() - t0
    common = dict(experiment=cfg.name, **info, task=task.name, task_version=task.version, level="word",
                  method="probe", pooling=stores["train"].manifest["word_pooling"], n_layers=n_layers - 1, seed=seed)
    train_size = len(y["train"])
    test_items = predictions.item_index(data["test"], items["test"].rows, "word")
    n_sent = test_items["n_sentences"]
    W = resample_weights(n_sent, mcfg.bootstrap, seed=0)
    metrics = ["accuracy", "macro_f1"] + (["pos_f1"] if n_classes == 2 else [])
    counts = {metric: np.stack([sentence_counts(metric, y["test"], fit.pred["test"][p], test_items["sentence"],
                                                n_sent, n_classes) for p in range(len(fit.ends))])
              for metric in metrics}
    rows: list[dict] = []

    def scores(p: int, probe: str, layer) -> list[dict]:
        kw = dict(**common, probe=probe, control=False, layer=layer, trainable_params=fit.n_params(p),
                  train_size=train_size, reg=float(fit.C[p]), train_seconds=secs / len(fit.ends))
        out = [row(**kw, split="dev", metric="accuracy", value=float(fit.dev_accuracy[p]))]
        for metric in metrics:
            value, lo, hi = bootstrap_interval(metric, counts[metric][p], W, mcfg.confidence)
            out += [row(**kw, split="test", metric=name, value=v)
                    for name, v in ((metric, value), (f"{metric}_ci_low", lo), (f"{metric}_ci_high", hi))]
        return out

    for p, end in enumerate(fit.ends):
        rows += scores(p, CUMULATIVE_PROBE, fit.layers[end])
    full = fit.full
    rows += scores(full, MIX_PROBE, None)
    summ = cumulative_summary(mcfg.metric, counts[mcfg.metric], W, mcfg.confidence)
    kw = dict(**common, probe=MIX_PROBE, control=False, trainable_params=fit.n_params(full), train_size=train_size)
    for layer, s in zip(fit.layers, fit.weights[full]):
        rows.append(row(**kw, layer=layer, split="train", metric="mix_weight", value=float(s)))
    for layer, dlt in zip(fit.layers[1:], summ["delta"]):
        rows.append(row(**kw, layer=layer, split="test", metric="delta", value=float(dlt)))
    for name in ("gain", "expected_layer"):
        for suffix, key in (("", name), ("_ci_low", f"{name}_lo"), ("_ci_high", f"{name}_hi")):
            rows.append(row(**kw, layer=None, split="test", metric=name + suffix, value=float(summ[key])))
    rows.append(row(**kw, layer=None, split="train", metric="center_of_gravity",
                    value=center_of_gravity(dict(zip(fit.layers, fit.weights[full])))))
    return rows
