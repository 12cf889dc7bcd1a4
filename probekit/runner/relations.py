"""Pair, choice and span probes for a config's models: stores -> probes on every layer -> rows of the results table.

:func:`run_relations` runs the relation-level tasks (``pair``, ``span``, ``choice``; :mod:`probekit.tasks.base`)
named in the ``relations:`` section of an experiment YAML (:class:`RelationsConfig`) for each model of the
experiment and its random-weights twin:

* ``choice`` tasks (``dep_arc``): the bilinear head probe of :mod:`probekit.probing.pairs`, metric ``uas``;
* ``pair`` tasks (``dep_label``, ``subject_of``): the linear probe on ``[h_i; h_j; h_i * h_j]``;
* ``span`` tasks (``subject_span``): the linear probe on each fixed span pooling (mean, max, endpoints) and
  Tenney's self-attentive pooling (:mod:`probekit.probing.spans`); the ``pooling`` column names the span pooling.

``features`` says what represents the words: ``hidden`` (the default: the block outputs above) and/or ``attention``
(Clark et al. 2019's attention-as-structure, :mod:`probekit.probing.attention_pairs`: a pair is the attention
between its two words in every head, both directions; pair and choice tasks only). Attention rows have ``site`` =
:data:`ATTENTION_SITE`, ``probe`` = linear, ``pooling`` = :data:`ATTENTION_POOLING`; a row per block (that block's
heads) and one with no layer (every chosen block's heads together, Clark et al.'s probe).

Rows: ``accuracy`` and ``macro_f1`` (``uas`` for a choice task), ``pos_f1`` for two-class tasks, each with
``<metric>_ci_low`` / ``<metric>_ci_high``: a percentile interval of the sentence bootstrap of
:mod:`probekit.results.significance` (test sentences resampled with replacement, one set of resamples shared by
every score). Per task and model, a ``majority`` baseline row set (``method`` = baseline, no layer): the most
frequent training class for every test item; for a choice task, the most frequent offset from a word to its
chosen word in train (e.g. "the head is the next word"), applied to every test word.

Finished units (model x task x pooling) are kept under ``results/<experiment>/relations/runs`` and reused.
``probekit run`` calls :func:`run_relations` for a config with a ``relations:`` section.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from probekit.activations.attention import word_attention
from probekit.activations.extract import Extractor
from probekit.activations.models import fingerprint
from probekit.config import ExperimentConfig, section_settings
from probekit.errors import ConfigError, DataError
from probekit.probing.attention_pairs import (
    ATTENTION_POOLING,
    ATTENTION_SITE,
    arc_candidates,
    attention_pair_features,
    fit_attention_arcs,
)
from probekit.probing.features import layer_groups
from probekit.probing.linear import fit_layers
from probekit.probing.pairs import arc_targets, fit_arc_layers, pair_features
from probekit.probing.spans import check_pooling, fit_attention_layers, span_features
from probekit.probing.structural import StructuralSettings
from probekit.report.relations_figures import relations_by_layer
from probekit.report.style import figure_paths
from probekit.results.significance import bootstrap_interval, resample_weights, score, sentence_counts
from probekit.results.table import load_unit, row, save_unit, to_frames
from probekit.runner.data import load_data, model_list, study_loader
from probekit.runner.study_main import study_main
from probekit.runner.units import study_unit_key
from probekit.tasks.base import RELATION_LEVELS, RelationItems, get_task

log = logging.getLogger(__name__)

#: Part of every unit's key: bumped when the code changes the numbers it gives.
UNIT_VERSION = 2
#: Largest feature block (bytes, float32, train + dev + test) built for one layer group.
BUDGET = 1 << 30
#: What can represent the words of a relation item (``relations.features``).
FEATURES = ("hidden", "attention")


@dataclass
class RelationsConfig:
    """The ``relations:`` section of an experiment YAML."""

    tasks: list = field(default_factory=lambda: ["dep_arc", "dep_label", "subject_of", "subject_span"])
    span_poolings: list = field(default_factory=lambda: ["mean", "max", "endpoints", "attention"])
    #: dep_arc and the attention pooling (Adam, dev-loss early stopping)
    epochs: int = 40
    batch_size: int = 20  # sentences per dep_arc batch (the structural probes' regimen)
    lr: float = 1e-3
    patience: int = 4
    bootstrap: int = 1000
    confidence: float = 0.95
    #: what represents the words: hidden (block outputs) and/or attention (pair and choice tasks)
    features: list = field(default_factory=lambda: ["hidden"])

    @classmethod
    def from_dict(cls, d: dict | None, *, source: str = "config") -> "RelationsConfig":
        out = section_settings(cls, d, "relations", source)
        if isinstance(out.features, str):
            out.features = [out.features]
        if not out.features or any(f not in FEATURES for f in out.features):
            raise ConfigError(f"{source}: 'relations.features' = {out.features!r}; give one or both of "
                              f"{', '.join(FEATURES)}.")
        if not out.tasks:
            raise ConfigError(f"{source}: 'relations.tasks' is empty; name at least one of dep_arc, dep_label, "
                              "subject_of, subject_span (or a pair/span/choice task of your own).")
        for t in out.tasks:
            task = get_task(t)
            if task.level not in RELATION_LEVELS:
                raise ConfigError(f"{source}: 'relations.tasks' lists {t}, a {task.level}-level task; word and "
                                  "sentence tasks go under 'tasks'.")
        for p in out.span_poolings:
            check_pooling(p)
        for k in ("epochs", "batch_size", "patience", "bootstrap"):
            v = getattr(out, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < (0 if k in ("patience", "bootstrap") else 1):
                raise ConfigError(f"{source}: 'relations.{k}' must be a positive whole number, got {v!r}.")
        return out


@dataclass
class RelationsResult:
    """What :func:`run_relations` returns: the rows of the results table."""

    rows: list

    def table(self):
        return to_frames(self.rows)[0]


def task_items(task, data: dict) -> dict[str, RelationItems]:
    """The task's items per split role, labelled items only; DataError naming the split when one has none."""
    out = {}
    for role in ("train", "dev", "test"):
        it = task.items(data[role])
        it = it.take(np.flatnonzero(it.y >= 0))
        if not len(it.y):
            raise DataError(f"Task {task.name} has no items in the {role} split ({len(data[role])} sentences); "
                            "give more sentences.")
        out[role] = it
    return out


def _fit_group(task, items: dict, X: dict, pooling: str | None, rcfg: RelationsConfig, cfg: ExperimentConfig,
               group: list[int]) -> list[dict]:
    """One layer group: per layer ``{"pred": test predictions, "n_params": ..., "reg": ...}``."""
    seed = cfg.seeds[0]
    if task.level == "choice":
        st = StructuralSettings(epochs=rcfg.epochs, batch_size=rcfg.batch_size, lr=rcfg.lr, patience=rcfg.patience,
                                seed=seed, device=cfg.device)
        t = {r: arc_targets(items[r]) for r in items}
        res = fit_arc_layers(X["train"], t["train"], X["dev"], t["dev"], X["test"], t["test"], settings=st)
        d = X["train"].shape[-1]
        test = items["test"]
        return [{"pred": r["pred"][test.rows("a")], "n_params": d * d, "reg": None} for r in res]
    n_classes = len(task.labels)
    if task.level == "span" and pooling == "attention":
        return fit_attention_layers(X, items, n_classes=n_classes, epochs=rcfg.epochs, lr=rcfg.lr,
                                    patience=rcfg.patience, seed=seed, device=cfg.device)
    if task.level == "pair":
        F = {r: pair_features(X[r], items[r].rows("a"), items[r].rows("b")) for r in items}
    else:
        F = {r: span_features(X[r], items[r], pooling) for r in items}
    fits = fit_layers(F["train"], items["train"].y, n_classes=n_classes, Cs=tuple(cfg.Cs), X_dev=F["dev"],
                      y_dev=items["dev"].y, layers=group, device=cfg.device, seed=seed)
    return [{"pred": f.predict(F["test"][i]), "n_params": f.n_params, "reg": f.C} for i, f in enumerate(fits)]


def _attention_layers(cfg: ExperimentConfig, n_blocks: int) -> list[int]:
    """The blocks (1..L) whose attention the config's ``layers`` chooses (layer 0, the embeddings, has none)."""
    chosen = cfg.layers if cfg.layers is not None else range(n_blocks + 1)
    return [int(x) for x in chosen if 0 < int(x) <= n_blocks]


def _fit_attention(task, items: dict, att: dict, blocks: list[int], cfg: ExperimentConfig) -> list[dict]:
    """The attention probes of one task: one per block in ``blocks`` (its heads), then one on all of them; each
    ``{"pred": test predictions, "n_params": ..., "reg": C}``."""
    sets = [[b - 1] for b in blocks] + [[b - 1 for b in blocks]]
    if task.level == "choice":
        cands = {r: arc_candidates(att[r], arc_targets(items[r])) for r in items}
        res = fit_attention_arcs(cands["train"], cands["dev"], cands["test"], layer_sets=sets, Cs=tuple(cfg.Cs),
                                 device=cfg.device)
        rows = items["test"].rows("a")
        return [{"pred": r["pred"][rows], "n_params": r["n_params"], "reg": r["C"]} for r in res]
    out = []
    for group in (sets[:-1], sets[-1:]):  # the per-block probes as one batched problem, then all blocks together
        F = {r: np.stack([attention_pair_features(att[r], items[r], s) for s in group]) for r in items}
        fits = fit_layers(F["train"], items["train"].y, n_classes=len(task.labels), Cs=tuple(cfg.Cs),
                          X_dev=F["dev"], y_dev=items["dev"].y, layers=list(range(len(group))), device=cfg.device,
                          seed=cfg.seeds[0])
        out += [{"pred": f.predict(F["test"][i]), "n_params": f.n_params, "reg": f.C} for i, f in enumerate(fits)]
    return out


def _metric_names(task) -> list[str]:
    if task.level == "choice":
        return ["uas"]
    return ["accuracy", "macro_f1"] + (["pos_f1"] if len(task.labels) == 2 else [])


def score_rows(task, test: RelationItems, pred: np.ndarray, weights: np.ndarray | None, confidence: float,
               common: dict, **extra) -> list[dict]:
    """Rows of one prediction set: each metric and its sentence-bootstrap interval (``weights``; None = no CI)."""
    out = []
    n_sent = len(test.offsets) - 1
    n_classes = 2 if task.level == "choice" else len(task.labels)
    gold, guess = test.y, np.asarray(pred)
    if task.level == "choice":  # accuracy of the chosen word, as class ids 1 = right / 0 = wrong
        gold, guess = np.ones_like(gold), (guess == gold).astype(np.int64)
    for metric in _metric_names(task):
        stat = "accuracy" if metric == "uas" else metric
        counts = sentence_counts(stat, gold, guess, test.sentence, n_sent, n_classes)
        if weights is None:
            value, cis = float(score(stat, counts.sum(0))), ()
        else:
            value, lo, hi = bootstrap_interval(stat, counts, weights, confidence)
            cis = (lo, hi)
        out.append(row(**common, split="test", metric=metric, value=value, **extra))
        for side, v in zip(("ci_low", "ci_high"), cis):
            out.append(row(**common, split="test", metric=f"{metric}_{side}", value=v, **extra))
    return out


def _attention_units(cfg: ExperimentConfig, lm, info: dict, data: dict, items: dict, pending: list, weights,
                     rcfg: RelationsConfig, progress: bool) -> dict:
    """The rows of the pending attention-feature units of one model, saved as the hidden-state units are:
    ``{key: rows}``. The word-level attention of the three splits is computed once for all of them."""
    folder = runs_folder(cfg)
    t0 = time.perf_counter()
    ex = Extractor(lm, word_pooling=cfg.word_pooling, batch_tokens=cfg.batch_tokens, precision=cfg.precision)
    att = {role: word_attention(ex, data[role], progress=progress) for role in ("train", "dev", "test")}
    log.info("%s: word-level attention of train, dev and test in %.1fs", info["model"], time.perf_counter() - t0)
    blocks = _attention_layers(cfg, lm.num_layers)
    out = {}
    for t, pooling, key in pending:
        t0 = time.perf_counter()
        it = items[t.name]
        common = dict(experiment=cfg.name, **info, task=t.name, task_version=t.version, level=t.level,
                      method="probe", probe="linear", pooling=pooling, site=ATTENTION_SITE, n_layers=lm.num_layers,
                      seed=cfg.seeds[0], control=False, train_size=len(it["train"].y))
        fits = _fit_attention(t, it, att, blocks, cfg)
        rows = []
        for layer, f in zip(blocks + [None], fits):
            rows += score_rows(t, it["test"], f["pred"], weights, rcfg.confidence, {**common, "layer": layer},
                               trainable_params=f["n_params"], reg=f["reg"])
        secs = time.perf_counter() - t0
        for r in rows:
            r["train_seconds"] = secs / len(fits)
        save_unit(folder / f"{key}.json", rows)
        out[key] = rows
        log.info("%s %s attention: %.1fs", info["model"], t.name, secs)
    return out


def majority_prediction(task, items: dict) -> np.ndarray:
    """The majority baseline's test predictions (see the module doc)."""
    train, test = items["train"], items["test"]
    if task.level == "choice":
        offsets, counts = np.unique(train.y - train.a, return_counts=True)
        return test.a + offsets[np.argmax(counts)]
    return np.full(len(test.y), np.bincount(train.y, minlength=len(task.labels)).argmax())


def runs_folder(cfg: ExperimentConfig) -> Path:
    """Where the finished units of the relations study are kept."""
    return Path(cfg.results_dir) / cfg.name / "relations" / "runs"


def plan_relations(cfg: ExperimentConfig, rcfg: RelationsConfig, model: str, data_fp: dict) -> list[tuple]:
    """The units of one model: ``(task, pooling, key)``; pooling :data:`ATTENTION_POOLING` is a task's
    attention-feature unit."""
    fp = fingerprint(model)
    # features is not in the settings: a hidden-state unit keeps the key it had before attention features existed
    settings = {k: v for k, v in asdict(rcfg).items() if k not in ("tasks", "span_poolings", "features")}
    plan = []
    for t in (get_task(name) for name in rcfg.tasks):
        poolings = (rcfg.span_poolings if t.level == "span" else [None]) if "hidden" in rcfg.features else []
        if "attention" in rcfg.features and t.level != "span":
            poolings = poolings + [ATTENTION_POOLING]
        for pooling in poolings:
            extra = {"features": "attention"} if pooling == ATTENTION_POOLING else {}
            plan.append((t, pooling, study_unit_key(cfg, fp, data_fp, version=UNIT_VERSION, task=t.fingerprint,
                                                    pooling=pooling, seed=cfg.seeds[0], Cs=list(cfg.Cs),
                                                    settings=settings, **extra)))
    return plan


def unfinished_units(cfg: ExperimentConfig, rcfg: RelationsConfig, model: str, data_fp: dict) -> int:
    """How many units of ``model`` are still to compute (the sweep's status of a relations cell)."""
    folder = runs_folder(cfg)
    return sum(load_unit(folder / f"{key}.json", key=key) is None for *_, key in plan_relations(cfg, rcfg, model,
                                                                                                 data_fp))


def run_relations(cfg: ExperimentConfig, rcfg: RelationsConfig | None = None, *, data: dict | None = None,
                  data_fp: dict | None = None, progress: bool = True, models: list[str] | None = None,
                  load: Callable | None = None) -> RelationsResult:
    """Relation-level probes (and majority baselines) for every model of ``cfg`` (or of ``models``); see the module
    docstring. ``load(model, site) -> (lm, stores, info)`` (default :func:`~probekit.runner.data.study_loader`) is
    called only for a model with units to compute."""
    rcfg = rcfg or RelationsConfig()
    folder = runs_folder(cfg)
    if data is None or data_fp is None:
        data, data_fp = load_data(cfg)
    load = load or study_loader(cfg, data, data_fp, progress=progress)
    tasks = [get_task(t) for t in rcfg.tasks]
    items = {t.name: task_items(t, data) for t in tasks}
    n_test = len(data["test"])
    weights = resample_weights(n_test, rcfg.bootstrap, seed=cfg.seeds[0]) if rcfg.bootstrap else None
    all_rows: list[dict] = []
    for m in models if models is not None else model_list(cfg):
        plan = plan_relations(cfg, rcfg, m, data_fp)
        done = {key: load_unit(folder / f"{key}.json", key=key, strict=cfg.strict) for *_, key in plan}
        pending = [p for p in plan if done[p[2]] is None and p[1] != ATTENTION_POOLING]
        pending_att = [p for p in plan if done[p[2]] is None and p[1] == ATTENTION_POOLING]
        lm = None
        if pending:
            lm, stores, info = load(m)
            n_layers = stores["train"].n_layers
            layers = cfg.layers if cfg.layers is not None else list(range(n_layers))
            d = stores["train"].hidden_size
            for t, pooling, key in pending:
                t0 = time.perf_counter()
                it = items[t.name]
                width = {"pair": 3 * d, "span": 2 * d}.get(t.level, d)
                n_rows = sum(len(it[r].y) for r in it) + sum(st.n_words for st in stores.values())
                common = dict(experiment=cfg.name, **info, task=t.name, task_version=t.version, level=t.level,
                              method="probe", probe="bilinear" if t.level == "choice" else "linear",
                              pooling=pooling or stores["train"].manifest["word_pooling"], n_layers=n_layers - 1,
                              seed=cfg.seeds[0], control=False, train_size=len(it["train"].y))
                rows = []
                for group in layer_groups(layers, n_rows, width, BUDGET):
                    X = {role: stores[role].layers(group) for role in ("train", "dev", "test")}
                    fits = _fit_group(t, it, X, pooling, rcfg, cfg, group)
                    del X
                    for layer, f in zip(group, fits):
                        rows += score_rows(t, it["test"], f["pred"], weights, rcfg.confidence,
                                           {**common, "layer": layer}, trainable_params=f["n_params"],
                                           reg=f.get("reg"))
                secs = time.perf_counter() - t0
                for r in rows:
                    r["train_seconds"] = secs / len(layers)
                save_unit(folder / f"{key}.json", rows)
                done[key] = rows
                log.info("%s %s %s: %.1fs", m, t.name, pooling or "", secs)
        if pending_att:
            if lm is None:  # the attention needs the model, not its stores
                lm, _, info = load(m, None)
            done.update(_attention_units(cfg, lm, info, data, items, pending_att, weights, rcfg, progress))
        del lm
        for *_, key in plan:
            all_rows += done[key]
        for t in tasks:
            it = items[t.name]
            all_rows += score_rows(t, it["test"], majority_prediction(t, it), weights, rcfg.confidence,
                                   dict(experiment=cfg.name, model=m, task=t.name, task_version=t.version,
                                        level=t.level, method="baseline", probe="majority", seed=cfg.seeds[0],
                                        train_size=len(it["train"].y)), trainable_params=0)
    return RelationsResult(rows=all_rows)


def load_relations_config(path: str | Path) -> tuple[ExperimentConfig, RelationsConfig]:
    """An experiment YAML with a ``relations:`` section -> (experiment config, relations settings)."""
    cfg = ExperimentConfig.from_yaml(path)
    return cfg, RelationsConfig.from_dict(cfg.relations, source=str(path))


def _figures(result: RelationsResult, folder: Path, formats) -> list[Path]:
    stem = folder / "relations_by_layer"
    relations_by_layer(result.table(), stem, formats=formats)
    return figure_paths(stem, formats)


def main(argv: list[str] | None = None) -> int:
    """``python -m probekit.runner.relations CONFIG``: run and write ``results/<name>/relations/results.csv``."""
    return study_main(argv, study="relations", load=load_relations_config, run=run_relations, figures=_figures)


if __name__ == "__main__":
    raise SystemExit(main())
