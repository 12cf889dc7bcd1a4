"""Figure of the pair, choice and span probes (:mod:`probekit.runner.relations`): score by layer.

:func:`relations_by_layer` draws, for one model, each task's headline score by layer (UAS for a choice task,
positive-class F1 for a two-class task, accuracy otherwise) with its 95% sentence-bootstrap band, the
random-weights twin dotted in the same colour and the majority baseline as a dashed horizontal line; a span task
gets one line per span pooling, and a task probed with attention features (site ``attn_pattern``) one line for
them, labelled "attention", by block (the row on all blocks together has no layer and is not drawn).
"""
from __future__ import annotations

from pathlib import Path

from probekit.activations.models import ModelName
from probekit.probing.attention_pairs import ATTENTION_SITE
from probekit.report.style import ONE_COLUMN, color, finish, new_figure, only_model, paper_style

SHORT = {"uas": "UAS", "pos_f1": "F1", "accuracy": "acc."}


def headline_metric(df, task: str) -> str:
    """The score drawn for ``task``: uas, pos_f1 (two classes) or accuracy."""
    metrics = set(df[df.task == task].metric)
    return next(m for m in ("uas", "pos_f1", "accuracy") if m in metrics)


def _curve(df, **kw):
    sel = df
    for k, v in kw.items():
        sel = sel[sel[k] == v]
    return sel.sort_values("layer")


def relations_by_layer(df, stem: Path | None = None, formats=("pdf", "png"), *, ax=None, model: str | None = None):
    """Headline score by layer for every relation task of ``df`` (a results table); returns the Figure (saved to
    ``stem`` when given). One model: ``model``, or the only one that is not a random-weights twin (a table of one
    random-weights model: that one)."""
    df = df[df.level.isin(["pair", "span", "choice"])]
    if df.empty:
        return None
    probes = df[(df.method == "probe") & df.layer.notna()]
    models = sorted(m for m in probes.model.unique() if "@random" not in m) or sorted(probes.model.unique())
    models = only_model(models, model, "relations_by_layer")
    m = models[0]
    with paper_style():
        own = ax is None
        if own:
            fig, axes = new_figure((ONE_COLUMN, 4.0))
            ax = axes[0][0]
        else:
            fig = ax.figure
        lines = [(t, p) for t in sorted(probes.task.unique())
                 for p in sorted(probes[probes.task == t].pooling.dropna().unique())]
        drawn: set = set()
        for i, (task, pooling) in enumerate(lines):
            metric = headline_metric(df, task)
            span = (probes[probes.task == task].level == "span").any()
            attention = (probes[(probes.task == task) & (probes.pooling == pooling)].site == ATTENTION_SITE).any()
            label = f"{task} {pooling}" if span else f"{task} attention" if attention else task
            cur = _curve(probes, model=m, task=task, pooling=pooling, metric=metric)
            if cur.empty:
                continue
            ax.plot(cur.layer, cur.value, marker="o", color=color(i), label=f"{label} ({SHORT[metric]})")
            lo = _curve(probes, model=m, task=task, pooling=pooling, metric=f"{metric}_ci_low")
            hi = _curve(probes, model=m, task=task, pooling=pooling, metric=f"{metric}_ci_high")
            if len(lo) == len(cur) == len(hi):
                ax.fill_between(cur.layer, lo.value.values, hi.value.values, color=color(i), alpha=0.2, linewidth=0)
            rnd = _curve(probes, model=ModelName.random_of(m), task=task, pooling=pooling, metric=metric)
            if len(rnd):
                ax.plot(rnd.layer, rnd.value, linestyle=":", color=color(i), linewidth=1)
            base = _curve(df[df.method == "baseline"], model=m, task=task, metric=metric)
            if len(base) and task not in drawn:  # one majority line per task, in its first line's colour
                ax.axhline(base.value.iloc[0], linestyle="--", color=color(i), linewidth=0.8, alpha=0.8)
                drawn.add(task)
        ax.set_xlabel("layer (0 = embeddings)")
        ax.set_ylabel("test score")
        ax.set_title(f"{m} (dotted: random weights; dashed: majority)")
        if own:
            fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncol=1)
        else:
            ax.legend(loc="best")
        return finish(fig, stem, formats)
