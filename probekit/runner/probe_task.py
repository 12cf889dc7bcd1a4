"""Train and score the probes of one task on one model's stores: the rows of its units.

:func:`probe_task` loads each layer group's features once (:func:`probekit.probing.features.feature_groups`) and
hands them to every pending unit's probe family (:mod:`probekit.probing.registry`); what is fitted once for several
seeds, which unit computes MDL and who writes the majority rows is :class:`~probekit.runner.units.ProbePolicy`'s
to say. It returns the rows; storing them is the caller's job.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from probekit._progress import progress_bar
from probekit.errors import ConfigError, TaskError
from probekit.probing.control import control_sentence_labels, control_word_labels
from probekit.probing.features import (
    ROLES,
    FeatureCache,
    Labelled,
    check_finite,
    feature_groups,
    labelled,
)
from probekit.probing.registry import LayerResult
from probekit.results import predictions
from probekit.results.table import classification_metrics, row
from probekit.runner.units import ProbePolicy, Unit

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Task:
    """What every unit of one task shares: labelled items per role, class count, row fields, control labels."""

    items: dict[str, Labelled]
    n_classes: int
    common: dict
    controls: dict[int, dict]

    @property
    def y(self) -> dict[str, np.ndarray]:
        return {role: it.y for role, it in self.items.items()}

    @property
    def train_size(self) -> int:
        return len(self.items["train"].y)


def labelled_items(task, data: dict, policy: ProbePolicy) -> dict[str, Labelled]:
    """The task's labelled items of each split role (train sampled down to ``policy.max_train_items``, a fixed seed-0
    sample shared by every seed and probe); a TaskError when a split has none or train has a single label."""
    items = {role: labelled(task, data[role]) for role in ROLES}
    for role in ROLES:
        if len(items[role].rows) == 0:
            raise TaskError(f"Task {task.name}: the {role} split has no labelled items "
                            f"({len(data[role])} sentences). Use more data or another split.")
    present = np.unique(items["train"].y)
    if len(present) < 2:
        raise TaskError(f"Task {task.name}: the train split has a single label ({task.labels[present[0]]!r}); "
                        "a probe cannot learn anything. Use more training data or check the task's rule.")
    n = len(items["train"].rows)
    if policy.max_train_items and n > policy.max_train_items:
        # a fixed (seed-0) sample, so that every seed and probe sees the same training items
        keep = np.random.default_rng(0).choice(n, policy.max_train_items, replace=False)
        items["train"] = items["train"].sample(np.sort(keep))
    return items


def _control_labels(task, data: dict, items: dict[str, Labelled], seeds: list[int], n_classes: int) -> dict:
    """{seed: {role: control labels}}: word-type controls for word tasks, shuffled labels for sentence tasks."""
    y = {role: it.y for role, it in items.items()}
    out = {}
    for seed in seeds:
        if task.level == "word":
            words = {role: np.array([w for s in data[role] for w in s.words], dtype=object)[items[role].rows]
                     for role in ROLES}
            out[seed] = control_word_labels(words, y, n_classes=n_classes, seed=seed)
        else:
            out[seed] = {role: control_sentence_labels(y[role], seed=seed + 1000 * i) for i, role in enumerate(ROLES)}
    return out


def probe_task(*, lm_info: dict, stores: dict, data: dict, task, policy: ProbePolicy, units: list[Unit],
               feature_cache: FeatureCache | None = None, predictions_dir: Path | None = None,
               progress: bool = False) -> dict[Unit, list[dict]]:
    """Train and score every unit of ``units`` (one task, one model): ``{unit: rows}``.

    ``lm_info``: ``{"name", "kind", "hash"}`` of the model; ``stores`` and ``data``: ``{role: store}`` and
    ``{role: [Sentence]}`` for train, dev and test. ``feature_cache``: kept by the caller across the tasks of one
    model, so that the next task reading the same rows reuses the last layer group's features.
    ``predictions_dir``: where each unit's per-layer test predictions are written (the sentence bootstrap, the
    significance tests and the error analysis read them: :mod:`probekit.results.predictions`); None writes none.
    ``progress``: a bar over the units' layers (tqdm.auto: widgets in Jupyter, text on stderr) with the time left.
    """
    level = task.level
    for u in units:
        family = policy.family(u.probe)
        if level not in family.levels:
            raise ConfigError(f"Probe {u.probe!r} works on {' and '.join(family.levels)} tasks, not on the "
                              f"{level}-level task {task.name!r}.")
    items = labelled_items(task, data, policy)
    n_classes = len(task.labels)
    n_layers = stores["train"].n_layers
    site = stores["train"].site
    if any(u.site != site for u in units):
        raise ConfigError(f"probe_task got units of sites {sorted({u.site for u in units})} with stores of site "
                          f"{site}: call it once per site with that site's stores.")
    layers = list(policy.layers) if policy.layers is not None else list(range(n_layers))
    if site != "resid_post":
        layers = [layer for layer in layers if layer != 0]  # a sub-layer site has no layer 0 (the embeddings)
    for layer in layers:
        try:
            stores["train"]._check_layer(layer)
        except ConfigError as e:
            raise ConfigError(f"Config 'layers' = {list(policy.layers or [])}: {e} (model {lm_info['name']})") from None
    common = dict(experiment=policy.experiment, model=lm_info["name"], model_kind=lm_info["kind"],
                  model_hash=lm_info["hash"][:16], task=task.name, task_version=task.version, level=level,
                  method="probe", site=site, n_layers=n_layers - 1)
    # every configured seed, not only the pending ones: a family may fit the controls of all seeds as one problem,
    # and a unit's numbers must not depend on which other units happen to be pending
    seeds = sorted(set(policy.seeds) | {u.seed for u in units})
    controls = _control_labels(task, data, items, seeds, n_classes) if policy.control_tasks else {}
    # every site's: the sentence intervals read them all (significance and errors the block outputs' only)
    save_predictions = predictions_dir is not None
    test_items = predictions.item_index(data["test"], items["test"].rows, level) if save_predictions else None
    t = _Task(items, n_classes, common, controls)
    out: dict[Unit, list[dict]] = {u: [] for u in units}
    by_pool: dict[str, list[Unit]] = {}
    for u in units:
        by_pool.setdefault(u.pooling, []).append(u)
    with progress_bar(len(units) * len(layers), f"probe {lm_info['name']} {task.name}", unit="layer",
                      enabled=progress) as bar:
        for pooling, punits in by_pool.items():
            _probe_pooling(pooling, punits, t, stores, items, layers, level, policy, feature_cache, predictions_dir,
                           test_items, out, lm_info, task, bar)
    return out


def _probe_pooling(pooling: str, punits: list[Unit], t: _Task, stores: dict, items: dict, layers: list[int],
                   level: str, policy: ProbePolicy, feature_cache, predictions_dir, test_items, out: dict, lm_info: dict,
                   task, bar) -> None:
    """The rows of the units of one pooling, layer group by layer group (into ``out``)."""
    pool_name = pooling if level == "sentence" else stores["train"].manifest["word_pooling"]
    for u in punits:
        out[u] += _fixed_rows(t, u, pool_name, policy)
    rows = {role: items[role].rows for role in ROLES}
    t0 = time.perf_counter()
    for group, X in feature_groups(stores, rows, layers, level=level, pooling=pooling, cache=feature_cache):
        log.info("%s %s %s: layers %s loaded (%.1fs)", lm_info["name"], task.name, pool_name, group,
                 time.perf_counter() - t0)
        if any(not policy.family(u.probe).checks_own_inputs for u in punits):
            # once per loaded group, naming the layer (a probe's own check would say neither layer nor cause)
            for role in ROLES:
                for i, layer in enumerate(group):
                    check_finite(X[role][i], f"layer {layer} ({role})")
        shared: dict = {}
        for u in punits:
            out[u] += _unit_group_rows(u, t, X, group, policy, pool_name, shared)
            if test_items is not None:
                for i, layer in enumerate(group):
                    res = shared[(u.probe, "fit", u.seed)][i]
                    predictions.save_layer(predictions_dir, u.key, gold=t.y["test"], pred=res.pred_test,
                                           proba=res.proba_test, items=test_items, model=t.common["model"],
                                           task=t.common["task"], probe=u.probe, pooling=pool_name, seed=u.seed,
                                           layer=layer, site=u.site)
            bar.update(len(group))
        t0 = time.perf_counter()


def _fixed_rows(t: _Task, u: Unit, pool_name: str, policy: ProbePolicy) -> list[dict]:
    """The rows of a unit that no layer has: majority-class scores (first probe only) and left-out counts."""
    rows = []
    if policy.writes_majority(u.probe, u.site):
        y_train, y_test = t.items["train"].y, t.items["test"].y
        majority = int(np.bincount(y_train, minlength=t.n_classes).argmax())
        for metric, value in classification_metrics(y_test, np.full(len(y_test), majority), t.n_classes).items():
            rows.append(row(**t.common, probe="majority", control=False, pooling=pool_name, layer=None, seed=u.seed,
                            split="test", metric=metric, value=value, trainable_params=0, train_size=len(y_train)))
    for role in ROLES:
        rows.append(row(**t.common, probe=u.probe, control=False, pooling=pool_name, layer=None, seed=u.seed,
                        split=role, metric="left_out", value=float(t.items[role].left_out)))
    return rows


def _score_rows(t: _Task, u: Unit, pool_name: str, layer: int, control: bool, split_scores: dict,
                res: LayerResult, seconds: float) -> list[dict]:
    return [row(**t.common, probe=u.probe, control=control, pooling=pool_name, layer=layer, seed=u.seed, split=split,
                metric=metric, value=value, trainable_params=res.n_params, train_size=t.train_size, reg=res.reg,
                train_seconds=seconds)
            for split, metrics in split_scores.items() for metric, value in metrics.items()]


def _unit_group_rows(u: Unit, t: _Task, X: dict, group: list[int], policy: ProbePolicy, pool_name: str,
                     shared: dict) -> list[dict]:
    """One unit's rows for one loaded layer group. ``shared`` holds the fits that several units of the group reuse
    (a fit that does not depend on the seed; control tasks fitted for all seeds at once)."""
    family, settings, y = policy.family(u.probe), policy.fit_settings, t.y
    rows: list[dict] = []
    t0 = time.perf_counter()
    if policy.shares_fit(u.probe):
        if (u.probe, "fit") not in shared:
            res = family.fit(X, y, n_classes=t.n_classes, settings=settings, seed=policy.fit_seed(u.probe, u.seed))
            shared[(u.probe, "fit")] = (res, time.perf_counter() - t0)
        res, secs = shared[(u.probe, "fit")]
    else:
        res = family.fit(X, y, n_classes=t.n_classes, settings=settings, seed=u.seed)
        secs = time.perf_counter() - t0
    shared[(u.probe, "fit", u.seed)] = res  # the unit's fit, for its predictions file
    secs /= len(group)
    for i, layer in enumerate(group):
        scores = {"dev": {"accuracy": float(np.mean(res[i].pred_dev == y["dev"]))},
                  "test": classification_metrics(y["test"], res[i].pred_test, t.n_classes)}
        if res[i].iterations is not None:  # how far the solver went: a reader can see that the fit converged
            scores["train"] = {"fit_iterations": float(res[i].iterations)}
        rows += _score_rows(t, u, pool_name, layer, False, scores, res[i], secs)
    control = t.controls.get(u.seed)
    if control is not None:
        t0 = time.perf_counter()
        chosen = [r.reg for r in res]
        if family.joint_controls:
            if (u.probe, "control") not in shared:
                every = family.fit_controls(X, t.controls, seeds=sorted(t.controls), n_classes=t.n_classes,
                                            settings=settings, chosen=chosen)
                shared[(u.probe, "control")] = (every, (time.perf_counter() - t0) / len(t.controls))
            every, secs = shared[(u.probe, "control")]
            cres = every[u.seed]
        else:
            cres = family.fit_controls(X, t.controls, seeds=[u.seed], n_classes=t.n_classes, settings=settings,
                                       chosen=chosen)[u.seed]
            secs = time.perf_counter() - t0
        secs /= len(group)
        for i, layer in enumerate(group):
            # accuracy, and for a binary task the positive class's F1 (selectivity on F1, report.tables)
            scores = {"test": {k: v for k, v in classification_metrics(control["test"], cres[i].pred_test,
                                                                       t.n_classes).items() if k != "macro_f1"}}
            rows += _score_rows(t, u, pool_name, layer, True, scores, cres[i], secs)
    if policy.runs_mdl(u.probe, u.seed):
        t0 = time.perf_counter()
        n = t.train_size
        take = np.arange(n)
        if policy.mdl_max_examples and n > policy.mdl_max_examples:
            take = np.sort(np.random.default_rng(u.seed).choice(n, policy.mdl_max_examples, replace=False))
        results = family.codelength(X["train"][:, take], y["train"][take], n_classes=t.n_classes, seed=u.seed,
                                    device=policy.device)
        secs = (time.perf_counter() - t0) / len(group)
        for i, layer in enumerate(group):
            for metric, value in results[i].metrics().items():
                rows.append(row(**t.common, probe=u.probe, control=False, pooling=pool_name, layer=layer, seed=u.seed,
                                split="train", metric=f"mdl_{metric}", value=value, train_size=len(take),
                                train_seconds=secs))
    return rows
