"""Per-head probes: every attention head of every block probed on its own, from the ``heads`` site.

The ``heads`` site (:mod:`probekit.activations.sites`) stores, per block, the heads' outputs before the output
projection, concatenated: ``[n_heads * d_head]``, head h the slice ``h * d_head : (h + 1) * d_head``. The experiment
runner probes that vector whole, one probe per layer. :func:`run_head_probes` probes each head's slice alone: one
linear probe (the runner's: multinomial logistic regression, L2 chosen per probe on dev from the experiment's
``Cs``) per layer x head, all heads of a layer group fitted as one batched problem, for each word and sentence task
of the experiment (``tasks``; sentence tasks read the ``mean`` sentence pooling).

Rows: the results table's, with ``site`` = ``heads.<h>`` (head h of the ``heads`` site; heads count from 0) and
``layer`` the block (1..L); ``accuracy`` and ``macro_f1`` (``pos_f1`` for two classes) on test, ``accuracy`` on dev;
per task a majority-class row set (``method`` = baseline, ``probe`` = majority, no layer: the most frequent training
label for every test item).
:func:`probekit.report.head_figures.heads_heatmap` draws test accuracy by layer x head.

Finished units (model x task) are kept under ``results/<experiment>/heads/runs`` and reused; the ``heads`` stores
are the experiment's (same keys as ``sites: [heads]``), so a run with that site shares them.
A ``head_probes:`` section (:class:`HeadProbesConfig`) makes it one of the study sections of ``probekit run``
(:mod:`probekit.runner.studies`); ``python -m probekit.runner.head_probes CONFIG`` runs it alone.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from probekit.activations.models import fingerprint
from probekit.config import ExperimentConfig, section_settings
from probekit.errors import ConfigError, TaskError
from probekit.probing.features import ROLES, feature_groups, labelled
from probekit.probing.linear import fit_layers
from probekit.report.head_figures import heads_heatmap
from probekit.report.style import figure_paths
from probekit.results.table import classification_metrics, load_unit, row, save_unit, to_frames
from probekit.runner.data import load_data, model_list, study_loader
from probekit.runner.study_main import study_main
from probekit.runner.units import study_unit_key
from probekit.tasks import get_task

log = logging.getLogger(__name__)

#: Part of every unit's key: bumped when the code changes the numbers it gives.
UNIT_VERSION = 1
#: The sentence pooling sentence tasks read (the heads' vectors have no [CLS] of their own to prefer).
SENTENCE_POOLING = "mean"
SITE = "heads"


def head_site(h: int) -> str:
    """The ``site`` value of head ``h``'s rows."""
    return f"{SITE}.{h}"


def split_heads(X: np.ndarray, n_heads: int) -> np.ndarray:
    """``[G, n, n_heads * d_head]`` -> ``[G * n_heads, n, d_head]``: problem ``g * n_heads + h`` is head h of layer
    g (the slice ``h * d_head : (h + 1) * d_head``)."""
    G, n, width = X.shape
    if width % n_heads:
        raise ConfigError(f"The heads store is {width} wide, not a multiple of {n_heads} heads.")
    d = width // n_heads
    return np.ascontiguousarray(X.reshape(G, n, n_heads, d).transpose(0, 2, 1, 3)).reshape(G * n_heads, n, d)


@dataclass
class HeadProbesConfig:
    """The ``head_probes:`` section: ``tasks``, the word and sentence tasks probed per head (default: the
    experiment's ``tasks``)."""

    tasks: list | None = None

    @classmethod
    def from_dict(cls, d: dict | None) -> "HeadProbesConfig":
        return section_settings(cls, d, "head_probes")

    def task_objects(self, cfg: ExperimentConfig) -> list:
        objs = [get_task(t) for t in (self.tasks if self.tasks is not None else cfg.tasks)]
        if not objs:
            raise ConfigError("Per-head probes: no task; name word or sentence tasks in the config's 'tasks' (or "
                              "'head_probes: {tasks: [...]}').")
        bad = [t.name for t in objs if t.level not in ("word", "sentence")]
        if bad:
            raise ConfigError(f"Per-head probes run word and sentence tasks; {', '.join(bad)} are not (set "
                              "'head_probes: {tasks: [...]}' to the word and sentence tasks).")
        return objs


def plan_heads(cfg: ExperimentConfig, settings: HeadProbesConfig, model: str, data_fp: dict) -> list[tuple]:
    """The units of one model: ``[(task, key)]``."""
    fp = fingerprint(model)
    return [(t, study_unit_key(cfg, fp, data_fp, version=UNIT_VERSION, study="heads", task=t.fingerprint,
                               seed=cfg.seeds[0], Cs=list(cfg.Cs))) for t in settings.task_objects(cfg)]


def runs_folder(cfg: ExperimentConfig) -> Path:
    """Where the finished units of the per-head probes are kept."""
    return Path(cfg.results_dir) / cfg.name / "heads" / "runs"


def unfinished_units(cfg: ExperimentConfig, settings: HeadProbesConfig, model: str, data_fp: dict) -> int:
    """How many units of ``model`` are still to compute (the sweep's status of a head-probes cell)."""
    return sum(load_unit(runs_folder(cfg) / f"{key}.json", key=key) is None
               for _, key in plan_heads(cfg, settings, model, data_fp))


@dataclass
class HeadsResult:
    """What :func:`run_head_probes` returns: the rows of the results table."""

    rows: list

    @classmethod
    def merge(cls, parts: list["HeadsResult"]) -> "HeadsResult":
        return cls([r for p in parts for r in p.rows])

    def table(self):
        return to_frames(self.rows)[0]


def _task_rows(cfg: ExperimentConfig, task, stores: dict, data: dict, info: dict, n_heads: int) -> list[dict]:
    """The rows of one task: a probe per layer x head."""
    items = {role: labelled(task, data[role]) for role in ROLES}
    for role in ROLES:
        if not len(items[role].rows):
            raise TaskError(f"Task {task.name}: the {role} split has no labelled items ({len(data[role])} sentences).")
    layers = [x for x in stores["train"].layer_ids if cfg.layers is None or x in cfg.layers]
    pooling = SENTENCE_POOLING if task.level == "sentence" else None
    n_classes = len(task.labels)
    common = dict(experiment=cfg.name, **info, task=task.name, task_version=task.version, level=task.level,
                  method="probe", probe="linear", control=False,
                  pooling=pooling or stores["train"].manifest["word_pooling"], n_layers=stores["train"].n_layers - 1,
                  seed=cfg.seeds[0], train_size=len(items["train"].y))
    majority = int(np.bincount(items["train"].y, minlength=n_classes).argmax())
    rows = [row(**{**common, "method": "baseline", "probe": "majority"}, site=SITE, layer=None, split="test",
                metric=metric, value=value, trainable_params=0)
            for metric, value in classification_metrics(items["test"].y, np.full(len(items["test"].y), majority),
                                                        n_classes).items()]
    t0 = time.perf_counter()
    for group, X in feature_groups(stores, {r: items[r].rows for r in ROLES}, layers, level=task.level,
                                   pooling=pooling):
        H = {role: split_heads(X[role], n_heads) for role in ROLES}
        del X
        fits = fit_layers(H["train"], items["train"].y, n_classes=n_classes, Cs=tuple(cfg.Cs), X_dev=H["dev"],
                          y_dev=items["dev"].y, layers=list(range(len(group) * n_heads)), device=cfg.device,
                          seed=cfg.seeds[0])
        for k, f in enumerate(fits):
            layer, h = group[k // n_heads], k % n_heads
            scores = {"dev": {"accuracy": float(np.mean(f.predict(H["dev"][k]) == items["dev"].y))},
                      "test": classification_metrics(items["test"].y, f.predict(H["test"][k]), n_classes)}
            rows += [row(**common, site=head_site(h), layer=layer, split=split, metric=metric, value=value,
                         trainable_params=f.n_params, reg=f.C)
                     for split, metrics in scores.items() for metric, value in metrics.items()]
    secs = time.perf_counter() - t0
    for r in rows:
        r["train_seconds"] = secs / max(1, len(layers) * n_heads)
    return rows


def run_head_probes(cfg: ExperimentConfig, settings: HeadProbesConfig | None = None, *, data: dict | None = None,
                    data_fp: dict | None = None, progress: bool = True, models: list[str] | None = None,
                    load: Callable | None = None) -> HeadsResult:
    """Per-head probes of the section's tasks for every model of ``cfg`` and its random-weights twin (or each of
    ``models``); see the module docstring. ``load(model, site) -> (lm, stores, info)`` (default
    :func:`~probekit.runner.data.study_loader`) is called only for a model with units to compute."""
    settings = settings or HeadProbesConfig()
    folder = runs_folder(cfg)
    if data is None or data_fp is None:
        data, data_fp = load_data(cfg)
    load = load or study_loader(cfg, data, data_fp, progress=progress)
    all_rows: list[dict] = []
    for m in models if models is not None else model_list(cfg):
        plan = plan_heads(cfg, settings, m, data_fp)
        done = {key: load_unit(folder / f"{key}.json", key=key, strict=cfg.strict) for _, key in plan}
        pending = [(t, key) for t, key in plan if done[key] is None]
        if pending:
            lm, stores, info = load(m, SITE)
            n_heads = int(lm.model.config.num_attention_heads)
            for t, key in pending:
                rows = _task_rows(cfg, t, stores, data, info, n_heads)
                save_unit(folder / f"{key}.json", rows)
                done[key] = rows
                log.info("%s %s: %d layers x %d heads probed", m, t.name,
                         len({r["layer"] for r in rows if r["method"] == "probe"}), n_heads)
            del lm, stores
        for _, key in plan:
            all_rows += done[key]
    return HeadsResult(rows=all_rows)


def _load(path: str | Path):
    cfg = ExperimentConfig.from_yaml(path)
    return cfg, HeadProbesConfig.from_dict(cfg.head_probes)


def head_figures(result: HeadsResult, folder: Path, formats) -> list[Path]:
    """A layer x head heatmap per model."""
    df = result.table()
    out = []
    for m in sorted(df.model.unique()):
        stem = folder / f"heads_accuracy_{Path(m).name.replace('@', '_')}"
        heads_heatmap(df, stem, formats=formats, model=m)
        out += figure_paths(stem, formats)
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m probekit.runner.head_probes CONFIG``: write ``results/<name>/heads/results.csv`` and a heatmap per
    model."""
    return study_main(argv, study="heads", load=_load, run=run_head_probes, figures=head_figures)


if __name__ == "__main__":
    raise SystemExit(main())
