"""Neuron-level analysis of a config's models (NeuroX, Dalvi et al. 2019): rows of the results table and the
rankings.

:func:`run_neurons` is the entry point (``python -m probekit.runner.neurons CONFIG``; ``probekit run`` calls it for
a config with a ``neurons:`` section). For each model (and its random-weights twin) and each word-level task of the
config, on every layer at once (:mod:`probekit.probing.neurons`):

1. an elastic-net probe on all neurons (``method`` = ``neurons:all``, ``probe`` = ``elastic_net``; metrics
   ``accuracy`` and ``zero_weights``, the fraction of its weights that the L1 penalty set to exactly 0);
2. NeuroX's ranking of the layer's neurons from that probe's weights, written to
   ``<results>/<experiment>/neurons/ranking-<model>-<task>.json`` (``{"layers": {layer: {"order", "cutoffs"}}}``);
3. for each fraction ``f`` and selection (``top``, ``random``, ``bottom``) of ``k = round(f * d)`` neurons, one row
   group per mode (``method`` = ``neurons:<mode>``, ``probe`` = ``<selection>_k<f>``, e.g. ``top_k0.1``):
   ``keep`` the probe retrained on the k neurons alone; ``mask`` the trained probe with every other neuron zeroed;
   ``zero`` the trained probe with the k neurons zeroed; ``zero_retrain`` the probe retrained without them.
   ``random`` is the mean over ``random_draws`` draws (metric ``accuracy_sd``: their standard deviation).

Every accuracy has ``accuracy_ci_low`` / ``accuracy_ci_high``: the 95% percentile bootstrap over test sentences
(:mod:`probekit.results.significance`; for ``random`` the bootstrap of the draws' mean). Finished units (model x task)
are kept under ``<results>/<experiment>/neurons/runs`` and reused by a rerun.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable

import numpy as np

from probekit._io import atomic_write_bytes
from probekit.activations.models import fingerprint
from probekit.config import ExperimentConfig
from probekit.errors import ConfigError, unknown_name
from probekit.probing.features import MEMORY_BUDGET, feature_groups, labelled
from probekit.probing.neurons import (
    SELECTIONS,
    ElasticNetSettings,
    fit_elastic_net,
    masked_predict,
    n_selected,
    neuron_ordering,
    select,
)
from probekit.report.neuron_figures import neuron_figures
from probekit.results.predictions import item_index
from probekit.results.significance import MIN_RESAMPLES, bootstrap_interval, resample_weights, sentence_counts
from probekit.results.table import load_unit, row, save_unit, to_frames
from probekit.runner.data import load_data, model_list, study_loader
from probekit.runner.study_main import study_main
from probekit.runner.units import study_unit_key
from probekit.tasks import get_task

log = logging.getLogger(__name__)

#: Part of every unit's key: bumped when the code changes the numbers it gives.
UNIT_VERSION = 2
MODES = ("keep", "mask", "zero", "zero_retrain")
#: Feature copies (standardised block, selected columns) held beside a layer group: the group's share of the budget.
COPIES = 4


@dataclass
class NeuronsConfig:
    """The ``neurons:`` section of an experiment YAML."""

    l1: float = 1e-3
    l2: float = 1e-3
    fractions: list = field(default_factory=lambda: [0.1])
    selections: list = field(default_factory=lambda: list(SELECTIONS))
    modes: list = field(default_factory=lambda: list(MODES))
    random_draws: int = 5
    search_stride: int = 100
    max_iter: int = 2000
    tol: float = 1e-4
    bootstrap: int = 1000
    confidence: float = 0.95

    @classmethod
    def from_dict(cls, d: dict | None, *, source: str = "config") -> "NeuronsConfig":
        d = dict(d or {})
        names = {f.name for f in fields(cls)}
        for k in d:
            if k not in names:
                raise unknown_name("neurons setting", k, names, ConfigError, hint=f"(in {source}, 'neurons')")
        out = cls(**d)
        out.check(source)
        return out

    def check(self, source: str = "config") -> None:
        for name in ("fractions", "selections", "modes"):
            if not isinstance(getattr(self, name), list) or not getattr(self, name):
                raise ConfigError(f"{source}: neurons.{name} must be a non-empty list, got {getattr(self, name)!r}.")
        for f in self.fractions:
            if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < f <= 1:
                raise ConfigError(f"{source}: neurons.fractions must lie in (0, 1] (0.1 = 10% of the neurons), "
                                  f"got {f!r}.")
        for s in self.selections:
            if s not in SELECTIONS:
                raise unknown_name("neuron selection", s, SELECTIONS, ConfigError, hint=f"(in {source}, 'neurons')")
        for m in self.modes:
            if m not in MODES:
                raise unknown_name("neuron mode", m, MODES, ConfigError, hint=f"(in {source}, 'neurons')")
        for name, low in (("random_draws", 1), ("search_stride", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ConfigError(f"{source}: neurons.{name} must be an integer >= {low}, got {v!r}.")
        if isinstance(self.bootstrap, bool) or not isinstance(self.bootstrap, int) or (
                self.bootstrap != 0 and self.bootstrap < MIN_RESAMPLES):
            raise ConfigError(f"{source}: neurons.bootstrap must be 0 (no intervals) or at least {MIN_RESAMPLES}, "
                              f"got {self.bootstrap!r}.")
        if not 0 < self.confidence < 1:
            raise ConfigError(f"{source}: neurons.confidence must be in (0, 1), got {self.confidence!r}.")
        self.solver(None)  # l1, l2, max_iter, tol

    def solver(self, device: str | None) -> ElasticNetSettings:
        return ElasticNetSettings(l1=self.l1, l2=self.l2, max_iter=self.max_iter, tol=self.tol, device=device)


def load_neurons_config(path: str | Path) -> tuple[ExperimentConfig, NeuronsConfig]:
    """An experiment YAML with a ``neurons:`` section -> (experiment config, neuron settings)."""
    cfg = ExperimentConfig.from_yaml(path)
    return cfg, NeuronsConfig.from_dict(cfg.neurons, source=str(path))


@dataclass
class NeuronsResult:
    """What :func:`run_neurons` returns: the rows and the rankings ``{(model, task): {layer: {"order", "cutoffs"}}}``."""

    rows: list
    rankings: dict

    def table(self):
        return to_frames(self.rows)[0]

    @classmethod
    def merge(cls, parts: list["NeuronsResult"]) -> "NeuronsResult":
        """One result of the parts of one run (e.g. one per model): their rows and rankings together."""
        return cls(rows=[r for p in parts for r in p.rows],
                   rankings={k: v for p in parts for k, v in p.rankings.items()})


def probe_name(selection: str, fraction: float) -> str:
    return f"{selection}_k{fraction:g}"


def _gather(X: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``X [G, N, d]`` restricted to the neurons ``idx [G, m]`` of each layer: ``[G, N, m]`` (a copy)."""
    return np.stack([X[g][:, idx[g]] for g in range(len(idx))])


def _complement(idx: np.ndarray, d: int) -> np.ndarray:
    keep = np.ones((len(idx), d), dtype=bool)
    for g, i in enumerate(idx):
        keep[g, i] = False
    return np.stack([np.flatnonzero(k) for k in keep])


class _Scorer:
    """Accuracy of predictions on the test items with its sentence-bootstrap interval (one resample set per unit,
    so every interval of a unit is paired)."""

    def __init__(self, y: np.ndarray, sentence: np.ndarray, n_sentences: int, n_classes: int, ncfg: NeuronsConfig,
                 seed: int):
        self.y, self.sentence, self.n, self.K = y, sentence, n_sentences, n_classes
        self.conf = ncfg.confidence
        self.W = resample_weights(n_sentences, ncfg.bootstrap, seed) if ncfg.bootstrap else None

    def metrics(self, preds: list[np.ndarray]) -> dict[str, float]:
        """``preds``: one prediction vector per draw; accuracy = their mean accuracy."""
        accs = [float((p == self.y).mean()) for p in preds]
        out = {"accuracy": float(np.mean(accs))}
        if self.W is not None:
            counts = np.stack([sentence_counts("accuracy", self.y, p, self.sentence, self.n, self.K) for p in preds])
            _, out["accuracy_ci_low"], out["accuracy_ci_high"] = bootstrap_interval("accuracy", counts, self.W,
                                                                                    self.conf)
        if len(preds) > 1:
            out["accuracy_sd"] = float(np.std(accs, ddof=1))
        return out


def analyse_group(Xtr: np.ndarray, ytr: np.ndarray, Xte: np.ndarray, n_classes: int, ncfg: NeuronsConfig,
                  scorer: _Scorer, *, seed: int, device: str | None = None) -> tuple[list[dict], list[dict]]:
    """Every measurement of one layer group: ``(per-layer results, per-layer rankings)``.

    A per-layer result is ``{(method, probe): metrics}`` (method without the ``neurons:`` prefix).
    """
    st = ncfg.solver(device)
    G, _, d = Xtr.shape
    full = fit_elastic_net(Xtr, ytr, n_classes=n_classes, settings=st)
    log.info("elastic-net probes of %d layers: %s iterations", G, full.iterations.tolist())
    for g in np.flatnonzero(~full.converged):
        log.warning("neuron probe of layer group index %d did not converge in %d iterations (tol %g)", g,
                    st.max_iter, st.tol)
    results: list[dict] = [{} for _ in range(G)]
    pred = full.predict(Xte)
    for g in range(G):
        results[g][("all", "elastic_net")] = {**scorer.metrics([pred[g]]),
                                             "zero_weights": float((full.W[g] == 0).mean())}
    rankings = []
    for g in range(G):
        order, cutoffs = neuron_ordering(full.W[g], search_stride=ncfg.search_stride)
        rankings.append({"order": order.tolist(), "cutoffs": cutoffs.tolist()})
    orders = np.stack([np.asarray(r["order"]) for r in rankings])
    for frac in ncfg.fractions:
        k = n_selected(frac, d)
        for sel in ncfg.selections:
            draws = ncfg.random_draws if sel == "random" else 1
            rng = np.random.default_rng(seed)
            preds: dict[str, list] = {m: [[] for _ in range(G)] for m in ncfg.modes}
            for _ in range(draws):
                if sel == "random":  # one draw: the same neuron indices in every layer
                    chosen = np.repeat(select(orders[0], k, "random", rng=rng)[None], G, axis=0)
                else:
                    chosen = np.stack([select(orders[g], k, sel) for g in range(G)])
                rest = _complement(chosen, d)
                for mode in ncfg.modes:
                    if mode == "mask":
                        p = masked_predict(full, Xte, rest)
                    elif mode == "zero":
                        p = masked_predict(full, Xte, chosen)
                    else:
                        cols = chosen if mode == "keep" else rest
                        init = (np.take_along_axis(full.W, cols[:, :, None], axis=1), full.b)
                        refit = fit_elastic_net(_gather(Xtr, cols), ytr, n_classes=n_classes, settings=st, init=init)
                        p = refit.predict(_gather(Xte, cols))
                    for g in range(G):
                        preds[mode][g].append(p[g])
            for mode in ncfg.modes:
                for g in range(G):
                    results[g][(mode, probe_name(sel, frac))] = scorer.metrics(preds[mode][g])
    return results, rankings


def _unit_rows(common: dict, layer: int, result: dict) -> list[dict]:
    out = []
    for (mode, probe), metrics in sorted(result.items()):
        for metric, value in metrics.items():
            out.append(row(**common, method=f"neurons:{mode}", probe=probe, control=False, layer=layer, split="test",
                           metric=metric, value=value))
    return out


def _model_stem(model: str) -> str:
    return Path(model).name.replace("@", "_")


def word_tasks(cfg: ExperimentConfig) -> list:
    """The config's word-level tasks, which the analysis runs on (ConfigError when there is none)."""
    tasks = [t for t in map(get_task, cfg.tasks) if t.level == "word"]
    if not tasks:
        raise ConfigError(f"neurons: the config has no word-level task (tasks: {cfg.tasks}); the neuron analysis "
                          "probes words. Add one, e.g. upos.")
    return tasks


def runs_folder(cfg: ExperimentConfig) -> Path:
    """Where the finished units of the neuron analysis are kept."""
    return Path(cfg.results_dir) / cfg.name / "neurons" / "runs"


def plan_neurons(cfg: ExperimentConfig, ncfg: NeuronsConfig, model: str, data_fp: dict) -> dict[str, str]:
    """The units of one model: ``{task name: key}``."""
    fp = fingerprint(model)
    return {task.name: study_unit_key(cfg, fp, data_fp, version=UNIT_VERSION,
                                      task=[task.name, task.version, task.fingerprint],
                                      seed=cfg.seeds[0], max_train=cfg.max_train_items, settings=asdict(ncfg))
            for task in word_tasks(cfg)}


def _finished(runs: Path, key: str, strict: bool = False) -> tuple | None:
    """A unit's (rows, ranking), or None unless both files are there and sound."""
    rows, rank = load_unit(runs / f"{key}.json", key=key, strict=strict), _load_ranking(runs / f"{key}.ranking.json")
    return None if rows is None or rank is None else (rows, rank)


def unfinished_units(cfg: ExperimentConfig, ncfg: NeuronsConfig, model: str, data_fp: dict) -> int:
    """How many units of ``model`` are still to compute (the sweep's status of a neurons cell)."""
    runs = runs_folder(cfg)
    return sum(_finished(runs, key) is None for key in plan_neurons(cfg, ncfg, model, data_fp).values())


def run_neurons(cfg: ExperimentConfig, ncfg: NeuronsConfig | None = None, *, data: dict | None = None,
                data_fp: dict | None = None, progress: bool = True, models: list[str] | None = None,
                load: Callable | None = None) -> NeuronsResult:
    """The neuron analysis of every model (or each of ``models``) x word-level task of ``cfg``; see the module
    docstring. ``load(model, site) -> (lm, stores, info)`` (default :func:`~probekit.runner.data.study_loader`) is
    called only for a model with units to compute."""

    ncfg = ncfg or NeuronsConfig()
    ncfg.check()
    root = Path(cfg.results_dir) / cfg.name / "neurons"
    runs = runs_folder(cfg)
    if data is None or data_fp is None:
        data, data_fp = load_data(cfg)
    load = load or study_loader(cfg, data, data_fp, progress=progress)
    skipped = [t.name for t in map(get_task, cfg.tasks) if t.level != "word"]
    if skipped:
        log.info("neurons: sentence-level tasks %s skipped (the analysis ranks word representations)", skipped)
    tasks = word_tasks(cfg)
    all_rows, rankings = [], {}
    for m in models if models is not None else model_list(cfg):
        plan = plan_neurons(cfg, ncfg, m, data_fp)
        done = {}
        for name, key in plan.items():
            got = _finished(runs, key, cfg.strict)
            if got is not None:
                done[name] = got
        pending = [t for t in tasks if t.name not in done]
        if pending:
            lm, stores, info = load(m)
            n_layers = stores["train"].n_layers
            layers = cfg.layers if cfg.layers is not None else list(range(n_layers))
            for task in pending:
                t0 = time.perf_counter()
                items = {r: labelled(task, data[r]) for r in ("train", "test")}
                if cfg.max_train_items and len(items["train"].y) > cfg.max_train_items:
                    keep = np.sort(np.random.default_rng(0).choice(len(items["train"].y), cfg.max_train_items,
                                                                   replace=False))
                    items["train"] = items["train"].sample(keep)
                where = item_index(data["test"], items["test"].rows, "word")
                K = len(task.labels)
                scorer = _Scorer(items["test"].y, where["sentence"], where["n_sentences"], K, ncfg, cfg.seeds[0])
                common = dict(experiment=cfg.name, **info,
                              task=task.name, task_version=task.version, level="word",
                              pooling=stores["train"].manifest["word_pooling"], n_layers=n_layers - 1,
                              seed=cfg.seeds[0], train_size=len(items["train"].y))
                rows, rank = [], {}
                for group, X in feature_groups(stores, {r: items[r].rows for r in items}, layers, level="word",
                                               pooling=None, budget=MEMORY_BUDGET // COPIES):
                    results, ranks = analyse_group(X["train"], items["train"].y, X["test"], K, ncfg, scorer,
                                                   seed=cfg.seeds[0], device=cfg.device)
                    for layer, res, rk in zip(group, results, ranks):
                        rows += _unit_rows(common, layer, res)
                        rank[layer] = rk
                secs = time.perf_counter() - t0
                for r in rows:
                    r["train_seconds"] = secs / max(len(layers), 1)
                key = plan[task.name]
                save_unit(runs / f"{key}.json", rows, key=key)
                atomic_write_bytes(runs / f"{key}.ranking.json", json.dumps(
                    {"layers": {str(k): v for k, v in rank.items()}}).encode())
                done[task.name] = (rows, rank)
                log.info("neurons %s %s: %.1fs", m, task.name, secs)
            del lm
        for task in tasks:
            rows, rank = done[task.name]
            all_rows += rows
            rankings[(m, task.name)] = rank
            write_ranking(root / f"ranking-{_model_stem(m)}-{task.name}.json", m, task, rank, ncfg)
    return NeuronsResult(rows=all_rows, rankings=rankings)


def _load_ranking(path: Path) -> dict | None:
    try:
        raw = json.loads(path.read_bytes().decode("utf-8"))
        return {int(k): v for k, v in raw["layers"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def write_ranking(path: Path, model: str, task, rank: dict, ncfg: NeuronsConfig) -> None:
    """The rankings of one model x task, atomically: neurons of each layer from most to least important, with the
    cutoffs (``cutoffs[p]`` neurons had entered at ``p / search_stride`` of the weight mass)."""
    doc = {"model": model, "task": task.name, "labels": list(task.labels), "l1": ncfg.l1, "l2": ncfg.l2,
           "search_stride": ncfg.search_stride, "layers": {str(k): rank[k] for k in sorted(rank)}}
    atomic_write_bytes(path, json.dumps(doc).encode())


def main(argv: list[str] | None = None) -> int:
    """``python -m probekit.runner.neurons CONFIG``: run and write ``results/<name>/neurons/results.csv``."""
    return study_main(argv, study="neurons", load=load_neurons_config, run=run_neurons, figures=neuron_figures)


if __name__ == "__main__":
    raise SystemExit(main())
