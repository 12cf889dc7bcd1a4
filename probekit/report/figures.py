"""Paper-ready figures from the tidy results table (layer 0 = embedding output on every x-axis).

* ``accuracy_by_layer``: test accuracy by layer, one line per task with a 95% CI band, each
  task's majority baseline dashed, the random-weights model dotted.
* ``report_<task>``: per task, (a) accuracy with CI band, control-task accuracy, random-weights
  model, majority and Tenney's expected layer (when the scalar-mix study ran); (b) selectivity; (c) MDL codelength.
* ``sentence_poolings``: per sentence task, accuracy by layer for each pooling (cls/mean/last).
* ``relative_depth``: models of different depth on one axis (layer / number of layers).
* ``heatmap``: tasks × layers, one panel per model, every cell annotated, each task's best layer boxed.
* ``mixing_weights`` (in :mod:`probekit.report.scalar_mix_figures`, when the scalar-mix study ran): Tenney's mixing
  weights and differential scores per task, with the expected layer and the centre of gravity marked.
* ``accuracy_by_site``: test accuracy by layer, one panel per task, one line per site (resid_post, attn_out...);
  drawn when more than one site was probed. The other figures show the block outputs (``resid_post``).
* ``baselines_vs_params`` (in :mod:`probekit.report.baselines_figure`): test accuracy against the trainable-parameter
  fraction (log x): each
  tuning method (fine-tuning, prompt / prefix tuning, adapters, LoRA) a marker, the linear probes
  of every layer a connected series at the probe's own (tiny) fraction.

Every function returns the matplotlib ``Figure`` (``None`` when there is nothing to draw) and writes files only when
given a ``stem`` (``stem.pdf``, ``stem.png``...). Figures are made without pyplot, so a notebook shows the returned
figure once and nothing stays open. Those that draw one axes take ``ax=`` to draw into an axes of your own figure
(then the figure returned is that axes' figure). Legends list only what was drawn. Figures are exactly their
documented width (3.25 in one column, 6.75 in two): constrained layout keeps labels and legends inside.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from probekit.activations.models import ModelName
from probekit.activations.sites import SITES
from probekit.probing.scalar_mix import MIX_PROBE
from probekit.report.baselines_figure import TUNING_METHODS, baselines_vs_params
from probekit.report.scalar_mix_figures import mixing_weights
from probekit.report.significance_figures import significance_figures
from probekit.report.style import (
    ONE_COLUMN,
    TWO_COLUMN,
    color,
    figure_paths,
    finish,
    new_figure,
    only_model,
    paper_style,
)
from probekit.report.tables import task_row_labels, unique_pivot
from probekit.results.table import block_outputs, control_mask

log = logging.getLogger(__name__)

CAUSAL_NOTE = "decoder: a word's state sees only its left context"
def _sel(s, **kw):
    m = np.ones(len(s), dtype=bool)
    for k, v in kw.items():
        m &= (s[k].astype(str) == str(v)).to_numpy()
    return s[m]


def _curve(s, *, model, task, metric="accuracy", probe="linear", control=False, pooling=None, split="test"):
    # method "probe": the per-layer probes (a study's rows, e.g. erasure:leace's linear probe on erased features,
    # share the probe and metric names)
    kw = dict(model=model, task=task, method="probe", metric=metric, probe=probe, control=control, split=split)
    if pooling is not None:
        kw["pooling"] = pooling
    part = _sel(s, **kw)
    part = part[part["layer"].astype(str) != ""]
    if part.empty:
        return None
    part = part.assign(layer=part["layer"].astype(float).astype(int)).sort_values("layer")
    return (part["layer"].to_numpy(), part["mean"].astype(float).to_numpy(), part["ci_lo"].astype(float).to_numpy(),
            part["ci_hi"].astype(float).to_numpy())


def _majority(s, model, task):
    part = _sel(s, model=model, task=task, method="probe", probe="majority", metric="accuracy", split="test")
    return float(part["mean"].iloc[0]) if len(part) else None


def _models(s):
    models = sorted({m for m in s["model"].unique() if not ModelName.parse(m).is_random})
    return models or sorted(s["model"].unique())


def _kind(s, model):
    k = s[s["model"] == model]["model_kind"]
    return str(k.iloc[0]) if len(k) else ""


def accuracy_by_layer(summary, stem: Path | None = None, formats=("pdf", "png"), *, probe="linear", ax=None,
                      model: str | None = None):
    """Test accuracy by layer, one line per task with its CI band; one panel per model (3.25 in wide for one model,
    6.75 in for more), or the one ``model`` into ``ax``."""
    s = summary[summary["level"] == "word"] if "level" in summary else summary
    models = _models(s)
    tasks = sorted(s["task"].unique())
    if not models or not tasks:
        return None
    if ax is not None or model is not None:
        models = only_model(models, model, "accuracy_by_layer")
    own = ax is None
    with paper_style():
        width = ONE_COLUMN if len(models) == 1 else TWO_COLUMN
        if own:
            fig, axes = new_figure((width, 2.6), 1, len(models), sharey=True)
        else:
            fig, axes = ax.figure, [[ax]]
        drew_majority = drew_random = False
        for ax_, model in zip(axes[0], models):
            ax = ax_
            for i, task in enumerate(tasks):
                c = _curve(s, model=model, task=task, probe=probe)
                if c is None:
                    continue
                x, m, lo, hi = c
                ax.plot(x, m, marker="o", color=color(i), label=task)
                ax.fill_between(x, lo, hi, color=color(i), alpha=0.2, linewidth=0)
                r = _curve(s, model=ModelName.random_of(model), task=task, probe=probe)
                if r is not None:
                    ax.plot(r[0], r[1], linestyle=":", color=color(i), linewidth=1)
                    drew_random = True
                maj = _majority(s, model, task)
                if maj is not None:
                    ax.axhline(maj, linestyle="--", color=color(i), linewidth=0.8, alpha=0.8)
                    drew_majority = True
            kind = _kind(s, model)
            ax.set_title(f"{model} ({kind})" + ("\n" + CAUSAL_NOTE if kind == "decoder" else ""))
            ax.set_xlabel("layer (0 = embeddings)")
        axes[0][0].set_ylabel("test accuracy")
        handles, labels = axes[0][0].get_legend_handles_labels()
        from matplotlib.lines import Line2D
        for drawn, style, label in ((drew_majority, "--", "majority class"), (drew_random, ":", "random weights")):
            if drawn:  # only what is drawn
                handles.append(Line2D([], [], color="grey", linestyle=style))
                labels.append(label)
        if own:
            fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 3))
        else:  # the caller's figure may hold other axes: the legend goes into this one
            ax.legend(handles, labels)
        return finish(fig, stem, formats)


def accuracy_by_site(summary, stem: Path | None = None, formats=("pdf", "png"), *, probe="linear", ax=None,
                     model: str | None = None, task: str | None = None):
    """Test accuracy by layer at each site (one line per site with its CI band; a sub-layer site starts at layer
    1): one panel per task of one model (3.25 in wide for one task, 6.75 in for more), or the one ``task`` into
    ``ax``. None when fewer than two sites were probed."""
    if "site" not in summary:
        return None
    s = summary[summary["site"].astype(str).isin(SITES)]
    s = s[s["level"] == "word"] if "level" in s else s
    sites = [x for x in SITES if x in set(s["site"].astype(str))]
    models = _models(s)
    if len(sites) < 2 or not models:
        return None
    model = only_model(models, model, "accuracy_by_site")[0]
    tasks = sorted(_sel(s, model=model)["task"].unique())
    if task is not None:
        tasks = [t for t in tasks if t == task]
    elif ax is not None:
        tasks = tasks[:1]
    if not tasks:
        return None
    own = ax is None
    with paper_style():
        if own:
            fig, axes = new_figure((ONE_COLUMN if len(tasks) == 1 else TWO_COLUMN, 2.6), 1, len(tasks), sharey=True)
        else:
            fig, axes = ax.figure, [[ax]]
        for ax_, t in zip(axes[0], tasks):
            for i, site in enumerate(sites):
                c = _curve(_sel(s, site=site), model=model, task=t, probe=probe)
                if c is None:
                    continue
                x, m, lo, hi = c
                ax_.plot(x, m, marker="o", markersize=3, color=color(i), label=site)
                ax_.fill_between(x, lo, hi, color=color(i), alpha=0.2, linewidth=0)
            maj = _majority(summary, model, t)
            if maj is not None:
                ax_.axhline(maj, linestyle="--", color="grey", linewidth=0.8, label="majority class")
            ax_.set_title(f"{model}: {t}")
            ax_.set_xlabel("layer (0 = embeddings)")
        axes[0][0].set_ylabel("test accuracy")
        handles, labels = axes[0][0].get_legend_handles_labels()
        if own:
            fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 4))
        else:
            axes[0][0].legend(handles, labels)
        return finish(fig, stem, formats)


def _depths(s, models) -> dict[str, float]:
    """Number of transformer blocks per model (the ``n_layers`` column)."""
    out = {}
    for m in models:
        n = _sel(s, model=m)["n_layers"]
        n = n[n.astype(str) != ""].astype(float)
        if len(n):
            out[m] = float(n.iloc[0])
    return out


def task_report(summary, task: str, stem: Path | None = None, formats=("pdf", "png"), *, probe="linear"):
    """(a) accuracy + control + random weights + majority + expected layer, (b) selectivity, (c) MDL.

    Models of different depth are drawn on relative depth (layer / number of blocks) so that they
    share the x-axis; the legend sits under the panels.
    """
    s = _sel(summary, task=task)
    models = _models(s)
    depths = _depths(s, models)
    relative = len(set(depths.values())) > 1 and len(depths) == len(models)

    def xs(model, layers):
        base = ModelName.parse(model).base
        return layers / depths[base] if relative and base in depths else layers

    if not models:
        return None
    with paper_style():
        fig, axes = new_figure((TWO_COLUMN, 2.7), 1, 3)
        axes = axes[0]
        for mi, model in enumerate(models):
            col = color(mi)
            c = _curve(s, model=model, task=task, probe=probe)
            if c is None:
                continue
            x, m, lo, hi = c
            ax = axes[0]
            ax.plot(xs(model, x), m, marker="o", color=col, label=f"{model}")
            ax.fill_between(xs(model, x), lo, hi, color=col, alpha=0.2, linewidth=0)
            cc = _curve(s, model=model, task=task, probe=probe, control=True)
            if cc is not None:
                ax.plot(xs(model, cc[0]), cc[1], color=col, linestyle="-.", label=f"{model} control task")
                ax.fill_between(xs(model, cc[0]), cc[2], cc[3], color=col, alpha=0.12, linewidth=0)
            r = _curve(s, model=ModelName.random_of(model), task=task, probe=probe)
            if r is not None:
                ax.plot(xs(model, r[0]), r[1], color=col, linestyle=":", label=ModelName.random_of(model))
            maj = _majority(s, model, task)
            if maj is not None and mi == 0:
                ax.axhline(maj, color="grey", linestyle="--", linewidth=0.8, label="majority class")
            el = _sel(s, model=model, metric="expected_layer", probe=MIX_PROBE)  # Tenney's, from the scalar mix
            if len(el) and np.isfinite(float(el["mean"].iloc[0])):
                e = float(el["mean"].iloc[0])
                xe = float(xs(model, np.array([e]))[0])
                ax.axvline(xe, color=col, linewidth=0.8, alpha=0.6)
                ax.annotate(f"E[l]={e:.1f}", (xe, 0.02), xycoords=("data", "axes fraction"), fontsize=6, color=col,
                            rotation=90, va="bottom", ha="right")
            sel = _curve(s, model=model, task=task, metric="selectivity", probe=probe)
            if sel is not None:
                axes[1].plot(xs(model, sel[0]), sel[1], marker="o", color=col)
                axes[1].fill_between(xs(model, sel[0]), sel[2], sel[3], color=col, alpha=0.2, linewidth=0)
            for mname, ls in ((model, "-"), (ModelName.random_of(model), ":")):
                md = _curve(s, model=mname, task=task, metric="mdl_codelength_kbits", probe=probe, split="train")
                if md is not None:
                    axes[2].plot(xs(model, md[0]), md[1], marker="o" if ls == "-" else None, linestyle=ls, color=col)
                    axes[2].fill_between(xs(model, md[0]), md[2], md[3], color=col, alpha=0.2, linewidth=0)
        axes[0].set_title(f"{task}: accuracy (95% CI)")
        axes[0].set_ylabel("test accuracy")
        axes[1].set_title("selectivity = task − control")
        axes[2].set_title("MDL online codelength")
        axes[2].set_ylabel("kbits (lower = easier to extract)")
        for ax in axes:
            ax.set_xlabel("relative depth (layer / L)" if relative else "layer (0 = embeddings)")
        handles, labels = axes[0].get_legend_handles_labels()
        if handles:
            fig.legend(handles, labels, loc="outside lower center", ncol=min(4, len(labels)))
        return finish(fig, stem, formats)


def sentence_poolings(summary, stem: Path | None = None, formats=("pdf", "png"), *, probe="linear"):
    """Sentence-level tasks: accuracy by layer per sentence pooling, one panel per model x task."""
    s = summary[summary["level"] == "sentence"] if "level" in summary else summary.iloc[:0]
    if s.empty:
        return None
    tasks = sorted(s["task"].unique())
    models = _models(s)
    with paper_style():
        fig, axes = new_figure((TWO_COLUMN, 1.9 * len(models)), len(models), len(tasks))
        for r, model in enumerate(models):
            for c, task in enumerate(tasks):
                ax = axes[r][c]
                pools = sorted(_sel(s, model=model, task=task)["pooling"].unique())
                for i, pooling in enumerate(pools):
                    cur = _curve(s, model=model, task=task, probe=probe, pooling=pooling)
                    if cur is None:
                        continue
                    ax.plot(cur[0], cur[1], marker="o", color=color(i), label=pooling)
                    ax.fill_between(cur[0], cur[2], cur[3], color=color(i), alpha=0.2, linewidth=0)
                maj = _majority(s, model, task)
                if maj is not None:
                    ax.axhline(maj, color="grey", linestyle="--", linewidth=0.8)
                ax.set_title(f"{model}: {task}")
                ax.set_xlabel("layer (0 = embeddings)")
                if c == 0:
                    ax.set_ylabel("test accuracy")
                if r == 0 and c == 0:
                    ax.legend(title="pooling")
        return finish(fig, stem, formats)


def relative_depth(summary, stem: Path | None = None, formats=("pdf", "png"), *, probe="linear", models=None):
    """Models of different depth side by side on relative depth (layer / number of blocks), one panel per task.

    Encoders solid, decoders dashed (a decoder's word state has seen only its left context).
    """
    s = summary[summary["level"] == "word"] if "level" in summary else summary
    models = models or _models(s)
    tasks = sorted(s["task"].unique())
    depths = _depths(s, models)
    if not tasks:
        return None
    with paper_style():
        fig, axes = new_figure((TWO_COLUMN, 2.4), 1, len(tasks), sharex=True)
        for t, task in enumerate(tasks):
            ax = axes[0][t]
            for i, model in enumerate(models):
                c = _curve(s, model=model, task=task, probe=probe)
                if c is None or model not in depths:
                    continue
                n = depths[model]
                kind = _kind(s, model)
                label = f"{model} ({kind}" + (": left context only)" if kind == "decoder" else ")")
                ax.plot(c[0] / n, c[1], marker="o", markersize=2, color=color(i), label=label,
                        linestyle="--" if kind == "decoder" else "-")
                ax.fill_between(c[0] / n, c[2], c[3], color=color(i), alpha=0.2, linewidth=0)
            ax.set_title(task)
            if t == 0:
                ax.set_ylabel("test accuracy")
        fig.supxlabel("relative depth (layer / number of blocks; 0 = embeddings)", fontsize=8)
        handles, labels = [], []
        for ax in axes[0]:
            for h, lab in zip(*ax.get_legend_handles_labels()):
                if lab not in labels:
                    handles.append(h)
                    labels.append(lab)
        if handles:
            fig.legend(handles, labels, loc="outside upper center", ncol=min(3, len(labels)))
        return finish(fig, stem, formats)


def heatmap(summary, stem: Path | None = None, formats=("pdf", "png"), *, metric: str = "accuracy",
            probe: str = "linear", models: list[str] | None = None, normalize: bool = False, annotate: bool = True,
            ax=None):
    """Annotated heatmap of the mean test ``metric``: tasks (rows) × layers (columns), one panel per model.

    Each task's best layer **on dev** is boxed (the layer the tables report; no box without dev rows).
    ``normalize=True`` colours each row by its own min–max range (where in depth a task peaks) while the annotations
    keep the raw values.

    Args:
        summary: the summary table (:func:`probekit.report.tables.summarize`).
        stem: output path without suffix (files are written only when given).
        models: models to draw (default every real model, then the random-weights ones).
        ax: draw the one model (``models=[NAME]`` or the only one) into this axes.
    """
    from matplotlib.patches import Rectangle

    s = summary

    def rows(split):
        sel = s[(s["metric"] == metric) & (s["split"] == split) & (s["probe"].astype(str) == probe)
                & control_mask(s, False) & (s["method"].astype(str) == "probe")]
        sel = sel[(sel["layer"].astype(str) != "") & sel["layer"].notna()]
        return sel.assign(layer=sel["layer"].astype(float).astype(int), mean=sel["mean"].astype(float))

    sel, dev = rows("test"), rows("dev")
    if sel.empty:
        return None
    if models is None:
        models = _models(sel) + sorted(m for m in set(sel["model"]) - set(_models(sel)) if ModelName.parse(m).is_random)
    models = [m for m in models if m in set(sel["model"])]
    if not models:
        return None
    if ax is not None:
        models = only_model(models, models[0] if len(models) == 1 else None, "heatmap")

    sel, dev = task_row_labels(sel), (task_row_labels(dev) if len(dev) else dev)
    mats, best = [], []
    for m in models:
        t = unique_pivot(sel[sel["model"] == m], ["task"], "heatmap").sort_index()
        mats.append(t)
        d = dev[dev["model"] == m] if len(dev) else dev
        d = unique_pivot(d, ["task"], "heatmap").reindex(index=t.index, columns=t.columns) if len(d) else None
        best.append(d)
    pct = metric in ("accuracy", "macro_f1", "pos_f1", "selectivity")
    with paper_style():
        heights = [0.28 * len(t) + 0.55 for t in mats]
        if ax is None:
            fig, axes = new_figure((TWO_COLUMN, sum(heights) + 0.35 * len(models)), len(models), 1,
                                gridspec_kw={"height_ratios": heights})
        else:
            fig, axes = ax.figure, np.array([[ax]])
        vmin = float(np.nanmin([np.nanmin(t.to_numpy()) for t in mats]))
        vmax = float(np.nanmax([np.nanmax(t.to_numpy()) for t in mats]))
        im = None
        for ax, m, t, d in zip(axes[:, 0], models, mats, best):
            vals = t.to_numpy(dtype=float)  # [task, layer]
            shown = vals
            if normalize:
                lo = np.nanmin(vals, axis=1, keepdims=True)
                rng = np.nanmax(vals, axis=1, keepdims=True) - lo
                shown = np.where(rng > 0, (vals - lo) / np.where(rng > 0, rng, 1), 1.0)
            im = ax.imshow(shown, aspect="auto", cmap="cividis", vmin=0 if normalize else vmin,
                           vmax=1 if normalize else vmax, interpolation="nearest")
            ax.grid(False)
            layers = list(t.columns)
            step = max(1, int(np.ceil(len(layers) / 16)))
            ax.set_xticks(range(0, len(layers), step))
            ax.set_xticklabels([str(layers[i]) for i in range(0, len(layers), step)])
            ax.set_yticks(range(len(t)))
            ax.set_yticklabels(list(t.index))
            kind = _kind(s, m)
            ax.set_title(f"{m}" + (f" ({kind})" if kind else ""), loc="left")
            if annotate:
                many = len(layers) > 14
                size = 4.5 if len(layers) > 24 else (5.5 if many else 6.5)
                for i in range(vals.shape[0]):
                    for j in range(vals.shape[1]):
                        v = vals[i, j]
                        if not np.isfinite(v):
                            continue
                        txt = f"{100 * v:.0f}" if (pct and many) else (f"{100 * v:.1f}" if pct else f"{v:.2g}")
                        light = shown[i, j] < (0.55 if normalize else vmin + 0.55 * (vmax - vmin))
                        ax.text(j, i, txt, ha="center", va="center", fontsize=size,
                                color="white" if light else "black")
            dev_vals = d.to_numpy(dtype=float) if d is not None else np.full_like(vals, np.nan)
            for i in range(vals.shape[0]):
                row = dev_vals[i]
                if np.isfinite(row).any():
                    j = int(np.nanargmax(row))  # the first of equal maxima, as the tables' idxmax
                    ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor=PALETTE_HIGHLIGHT,
                                           linewidth=1.2))
        axes[-1, 0].set_xlabel("layer (0 = embeddings); box = best layer on dev per task")
        label = f"test {metric}" + (" (%)" if pct else "")
        if normalize:
            label = f"{label}, scaled per task"
        cb = fig.colorbar(im, ax=list(axes[:, 0]), fraction=0.025, pad=0.01)
        if pct and not normalize:
            from matplotlib.ticker import FuncFormatter

            cb.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{100 * v:.0f}"))
        cb.set_label(label)
        return finish(fig, stem, formats)


PALETTE_HIGHLIGHT = "#D55E00"  # Okabe-Ito vermillion: the best-layer boxes


def experiment_figures(df, summary, folder: Path, formats=("pdf", "png")) -> list[Path]:
    """The default figure set of an experiment, under ``<folder>/figures``.

    ``df`` is the tidy table (with tuning-baseline rows, if any: then ``baselines_vs_params`` is drawn).
    """
    folder = Path(folder) / "figures"
    out = []

    def add(stem: str, fig) -> None:
        if fig is not None:
            out.extend(figure_paths(folder / stem, formats))

    everything, summary = summary, block_outputs(summary)  # the figures below read one vector per layer
    for m in _models(everything):
        stem = "accuracy_by_site" + ("" if len(_models(everything)) == 1 else f"_{m.replace('/', '_')}")
        add(stem, accuracy_by_site(everything, folder / stem, formats, model=m))
    word = summary[summary["level"] == "word"] if "level" in summary else summary
    add("accuracy_by_layer", accuracy_by_layer(summary, folder / "accuracy_by_layer", formats))
    for task in sorted(word["task"].unique()) if "level" in summary else []:
        add(f"report_{task}", task_report(summary, task, folder / f"report_{task}", formats))
    add("sentence_poolings", sentence_poolings(summary, folder / "sentence_poolings", formats))
    if len(_models(word)) > 1:
        add("relative_depth", relative_depth(summary, folder / "relative_depth", formats))
    add("heatmap", heatmap(summary, folder / "heatmap", formats))
    add("mixing_weights", mixing_weights(summary, folder / "mixing_weights", formats))
    if df is not None and "method" in df and df["method"].isin(TUNING_METHODS).any():
        add("baselines_vs_params", baselines_vs_params(df, folder / "baselines_vs_params", formats))

    out += significance_figures(folder.parent, summary, formats)  # block outputs only (their predictions are saved)  # sentence bands, best-layer confusion matrices
    return out
