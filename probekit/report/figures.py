"""Paper-ready figures from the tidy results table (layer 0 = embedding output on every x-axis).

* ``accuracy_by_layer``: test accuracy by layer, one line per task with a 95% CI band, each
  task's majority baseline dashed, the random-weights model dotted.
* ``report_<task>``: per task, (a) accuracy with CI band, control-task accuracy, random-weights
  model, majority and the expected layer; (b) selectivity; (c) MDL codelength.
* ``sentence_poolings``: per sentence task, accuracy by layer for each pooling (cls/mean/last).
* ``relative_depth``: models of different depth on one axis (layer / number of layers).
* ``heatmap``: tasks × layers, one panel per model, every cell annotated, each task's best layer boxed.
* ``baselines_vs_params``: test accuracy against the trainable-parameter fraction (log x): each
  tuning method (fine-tuning, prompt / prefix tuning, adapters, LoRA) a marker, the linear probes
  of every layer a connected series at the probe's own (tiny) fraction.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from probekit.activations.models import ModelName
from probekit.report.style import ONE_COLUMN, TWO_COLUMN, color, paper_style, save
from probekit.results.table import control_mask

log = logging.getLogger(__name__)

CAUSAL_NOTE = "decoder: a word's state sees only its left context"
#: Tuning baselines (``method`` column) and their markers in :func:`baselines_vs_params`.
TUNING_METHODS = {"finetune": ("o", "full fine-tuning"), "prompt_tuning": ("^", "prompt tuning"),
                  "prefix_tuning": ("v", "prefix tuning"), "adapter": ("s", "adapters"), "lora": ("D", "LoRA")}


def _sel(s, **kw):
    m = np.ones(len(s), dtype=bool)
    for k, v in kw.items():
        m &= (s[k].astype(str) == str(v)).to_numpy()
    return s[m]


def _curve(s, *, model, task, metric="accuracy", probe="linear", control=False, pooling=None, split="test"):
    kw = dict(model=model, task=task, metric=metric, probe=probe, control=control, split=split)
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
    part = _sel(s, model=model, task=task, probe="majority", metric="accuracy", split="test")
    return float(part["mean"].iloc[0]) if len(part) else None


def _models(s):
    models = sorted({m for m in s["model"].unique() if not ModelName.parse(m).is_random})
    return models or sorted(s["model"].unique())


def _kind(s, model):
    k = s[s["model"] == model]["model_kind"]
    return str(k.iloc[0]) if len(k) else ""


def accuracy_by_layer(summary, stem: Path, formats=("pdf", "png"), *, probe="linear") -> list[Path]:
    s = summary[summary["level"] == "word"] if "level" in summary else summary
    models = _models(s)
    tasks = sorted(s["task"].unique())
    if not models or not tasks:
        return []
    with paper_style() as plt:
        width = ONE_COLUMN if len(models) == 1 else TWO_COLUMN
        fig, axes = plt.subplots(1, len(models), figsize=(width, 2.4), squeeze=False, sharey=True)
        for ax, model in zip(axes[0], models):
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
                maj = _majority(s, model, task)
                if maj is not None:
                    ax.axhline(maj, linestyle="--", color=color(i), linewidth=0.8, alpha=0.8)
            kind = _kind(s, model)
            ax.set_title(f"{model} ({kind})" + ("\n" + CAUSAL_NOTE if kind == "decoder" else ""))
            ax.set_xlabel("layer (0 = embeddings)")
        axes[0][0].set_ylabel("test accuracy")
        handles, labels = axes[0][0].get_legend_handles_labels()
        from matplotlib.lines import Line2D
        handles += [Line2D([], [], color="grey", linestyle="--"), Line2D([], [], color="grey", linestyle=":")]
        labels += ["majority class", "random weights"]
        fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=min(len(labels), 4))
        out = save(fig, stem, formats)
        plt.close(fig)
    return out


def _depths(s, models) -> dict[str, float]:
    """Number of transformer blocks per model (the ``n_layers`` column)."""
    out = {}
    for m in models:
        n = _sel(s, model=m)["n_layers"]
        n = n[n.astype(str) != ""].astype(float)
        if len(n):
            out[m] = float(n.iloc[0])
    return out


def task_report(summary, task: str, stem: Path, formats=("pdf", "png"), *, probe="linear") -> list[Path]:
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

    with paper_style() as plt:
        fig, axes = plt.subplots(1, 3, figsize=(TWO_COLUMN, 2.5), layout="constrained")
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
            el = _sel(s, model=model, metric="expected_layer", probe=probe)
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
        out = save(fig, stem, formats)
        plt.close(fig)
    return out


def sentence_poolings(summary, stem: Path, formats=("pdf", "png"), *, probe="linear") -> list[Path]:
    s = summary[summary["level"] == "sentence"] if "level" in summary else summary.iloc[:0]
    if s.empty:
        return []
    tasks = sorted(s["task"].unique())
    models = _models(s)
    with paper_style() as plt:
        fig, axes = plt.subplots(len(models), len(tasks), figsize=(TWO_COLUMN, 1.9 * len(models)), squeeze=False)
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
        fig.tight_layout()
        out = save(fig, stem, formats)
        plt.close(fig)
    return out


def relative_depth(summary, stem: Path, formats=("pdf", "png"), *, probe="linear", models=None) -> list[Path]:
    """Models of different depth side by side on relative depth (layer / number of blocks), one panel per task.

    Encoders solid, decoders dashed (a decoder's word state has seen only its left context).
    """
    s = summary[summary["level"] == "word"] if "level" in summary else summary
    models = models or _models(s)
    tasks = sorted(s["task"].unique())
    depths = _depths(s, models)
    with paper_style() as plt:
        fig, axes = plt.subplots(1, len(tasks), figsize=(TWO_COLUMN, 2.2), squeeze=False, sharex=True,
                                 layout="constrained")
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
        out = save(fig, stem, formats)
        plt.close(fig)
    return out


def heatmap(summary, stem: Path, formats=("pdf", "png"), *, metric: str = "accuracy", probe: str = "linear",
            models: list[str] | None = None, normalize: bool = False, annotate: bool = True) -> list[Path]:
    """Annotated heatmap of the mean test ``metric``: tasks (rows) × layers (columns), one panel per model.

    Each task's best layer is boxed. ``normalize=True`` colours each row by its own min–max range
    (where in depth a task peaks) while the annotations keep the raw values.

    Args:
        summary: the summary table (:func:`probekit.report.tables.summarize`).
        stem: output path without suffix.
        models: models to draw (default every real model, then the random-weights ones).
    """
    from matplotlib.patches import Rectangle

    s = summary
    sel = s[(s["metric"] == metric) & (s["split"] == "test") & (s["probe"].astype(str) == probe)
            & control_mask(s, False) & (s["method"].astype(str) == "probe")]
    sel = sel[sel["layer"].astype(str) != ""]
    sel = sel[sel["layer"].notna()]
    if sel.empty:
        return []
    sel = sel.assign(layer=sel["layer"].astype(float).astype(int), mean=sel["mean"].astype(float))
    if models is None:
        models = _models(sel) + sorted(m for m in set(sel["model"]) - set(_models(sel)) if ModelName.parse(m).is_random)
    models = [m for m in models if m in set(sel["model"])]
    if not models:
        return []
    from probekit.report.tables import task_row_labels, unique_pivot

    sel = task_row_labels(sel)
    mats = []
    for m in models:
        t = unique_pivot(sel[sel["model"] == m], ["task"], "heatmap")
        mats.append(t.sort_index())
    pct = metric in ("accuracy", "macro_f1", "pos_f1", "selectivity")
    with paper_style() as plt:
        heights = [0.28 * len(t) + 0.55 for t in mats]
        fig, axes = plt.subplots(len(models), 1, figsize=(TWO_COLUMN, sum(heights) + 0.35 * len(models)),
                                 squeeze=False, gridspec_kw={"height_ratios": heights}, layout="constrained")
        vmin = float(np.nanmin([np.nanmin(t.to_numpy()) for t in mats]))
        vmax = float(np.nanmax([np.nanmax(t.to_numpy()) for t in mats]))
        im = None
        for ax, m, t in zip(axes[:, 0], models, mats):
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
            for i in range(vals.shape[0]):
                row = vals[i]
                if np.isfinite(row).any():
                    j = int(np.nanargmax(row))
                    ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor=PALETTE_HIGHLIGHT,
                                           linewidth=1.2))
        axes[-1, 0].set_xlabel("layer (0 = embeddings); box = best layer per task")
        label = f"test {metric}" + (" (%)" if pct else "")
        if normalize:
            label = f"{label}, scaled per task"
        cb = fig.colorbar(im, ax=list(axes[:, 0]), fraction=0.025, pad=0.01)
        if pct and not normalize:
            from matplotlib.ticker import FuncFormatter

            cb.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{100 * v:.0f}"))
        cb.set_label(label)
        out = save(fig, stem, formats)
        plt.close(fig)
    return out


PALETTE_HIGHLIGHT = "#D55E00"  # Okabe-Ito vermillion: the best-layer boxes


def _agg(df, keys: list[str], col: str = "value"):
    """Mean and 95% CI over seeds of ``col`` per ``keys`` group (tidy table -> summary-like frame)."""
    import pandas as pd

    from probekit.results.stats import mean_ci

    recs = []
    for key, part in df.groupby(keys, dropna=False, sort=True):
        mean, lo, hi = mean_ci(part[col].astype(float).to_numpy())
        rec = dict(zip(keys, key if isinstance(key, tuple) else (key,)))
        rec.update(mean=mean, ci_lo=lo, ci_hi=hi)
        for extra in ("trainable_fraction", "trainable_params"):
            if extra in part:
                rec[extra] = pd.to_numeric(part[extra], errors="coerce").median()
        recs.append(rec)
    return pd.DataFrame(recs)


def baselines_vs_params(data, stem: Path, formats=("pdf", "png"), *, metric: str = "accuracy",
                        split: str = "test", probe: str = "linear", models: list[str] | None = None,
                        tasks: list[str] | None = None) -> list[Path]:
    """Test ``metric`` against the fraction of trainable parameters (log x), one panel per model × task.

    Tuning baselines (``method`` in finetune / prompt_tuning / prefix_tuning / adapter / lora, layer -1
    or empty) are one marker each with a 95% CI bar over seeds; the ``probe`` probes of every layer form a
    connected series at the probe's fraction (darker = deeper layer; the best layer is labelled), and the
    majority class is dashed.

    Args:
        data: the tidy results table (``value`` and ``trainable_fraction`` columns; probes and tuning rows
            together), or a summary-like table with ``mean``/``ci_lo``/``ci_hi`` and ``trainable_fraction``.
    Returns:
        The written paths; ``[]`` when the table has no tuning-baseline rows.

    A probe row without ``trainable_fraction`` gets ``trainable_params`` / (the model's total parameters,
    derived from its tuning rows as ``trainable_params / trainable_fraction``).
    """
    import pandas as pd

    from probekit.errors import DataError

    d = data.copy()
    if "trainable_fraction" not in d:
        raise DataError("baselines_vs_params needs a trainable_fraction column: pass the tidy results table "
                        "(results.csv plus the baselines' rows), not the summary.")
    d = d[(d["metric"] == metric) & (d["split"] == split)]
    if "control" in d:
        d = d[~control_mask(d, True)]
    layer = pd.to_numeric(d["layer"], errors="coerce")
    tuning = d[d["method"].isin(TUNING_METHODS) & (layer.isna() | (layer < 0))]
    if tuning.empty:
        log.info("baselines_vs_params: no tuning-baseline rows (%s); nothing drawn", ", ".join(TUNING_METHODS))
        return []
    probes = d[(d["method"] == "probe") & (d["probe"].astype(str) == probe) & layer.notna() & (layer >= 0)]
    majority = d[(d["method"] == "probe") & (d["probe"].astype(str) == "majority")]
    summarised = "mean" in d and "value" not in d
    if summarised:
        t_agg, p_agg = tuning, probes.assign(layer=pd.to_numeric(probes["layer"]).astype(int))
        m_agg = majority
    else:
        t_agg = _agg(tuning, ["model", "task", "method"])
        p_agg = _agg(probes.assign(layer=pd.to_numeric(probes["layer"]).astype(int)), ["model", "task", "layer"])
        m_agg = _agg(majority, ["model", "task"])
    for c in ("trainable_fraction", "trainable_params"):
        for frame in (t_agg, p_agg):
            if c in frame:
                frame[c] = pd.to_numeric(frame[c], errors="coerce")
    totals = {}
    for m, part in t_agg.groupby("model"):
        ok = part[(part["trainable_fraction"] > 0) & part["trainable_params"].notna()]
        if len(ok):
            totals[m] = float((ok["trainable_params"] / ok["trainable_fraction"]).median())
    if len(p_agg):
        frac = p_agg["trainable_fraction"] if "trainable_fraction" in p_agg else pd.Series(np.nan, index=p_agg.index)
        derived = p_agg["trainable_params"] / p_agg["model"].map(totals) if "trainable_params" in p_agg else np.nan
        p_agg = p_agg.assign(trainable_fraction=frac.where(frac.notna(), derived))
    models = models or sorted(t_agg["model"].unique())
    tasks = tasks or sorted(t_agg["task"].unique())
    with paper_style() as plt:
        fig, axes = plt.subplots(len(models), len(tasks), figsize=(TWO_COLUMN, 2.1 * len(models) + 0.3),
                                 squeeze=False, sharex=True)
        from matplotlib import cm

        for r, model in enumerate(models):
            for c, task in enumerate(tasks):
                ax = axes[r][c]
                tt = t_agg[(t_agg["model"] == model) & (t_agg["task"] == task)]
                for i, (method, (marker, label)) in enumerate(TUNING_METHODS.items()):
                    row = tt[tt["method"] == method]
                    if row.empty or not np.isfinite(float(row["trainable_fraction"].iloc[0])):
                        continue
                    x, y = float(row["trainable_fraction"].iloc[0]), float(row["mean"].iloc[0])
                    err = [[y - float(row["ci_lo"].iloc[0])], [float(row["ci_hi"].iloc[0]) - y]]
                    ax.errorbar([x], [y], yerr=err, marker=marker, color=color(i), linestyle="none",
                                markersize=5, capsize=2, label=label)
                pp = p_agg[(p_agg["model"] == model) & (p_agg["task"] == task)].sort_values("layer")
                pp = pp[np.isfinite(pp["trainable_fraction"].astype(float))]
                if len(pp):
                    x = pp["trainable_fraction"].astype(float).to_numpy()
                    y = pp["mean"].astype(float).to_numpy()
                    layers = pp["layer"].to_numpy()
                    ax.plot(x, y, color="0.55", linewidth=0.8, zorder=1)
                    shades = cm.Greys(np.linspace(0.35, 1.0, len(layers)))
                    ax.scatter(x, y, c=shades, s=9, zorder=2, label=f"{probe} probe per layer (darker = deeper)")
                    b = int(np.nanargmax(y))
                    ax.annotate(f"layer {layers[b]}", (x[b], y[b]), xytext=(4, 0), textcoords="offset points",
                                fontsize=6, va="center")
                elif len(probes):
                    log.warning("baselines_vs_params: no trainable fraction for the %s probes of %s (no tuning rows "
                                "to derive the model size from); probes not drawn", probe, model)
                mm = m_agg[(m_agg["model"] == model) & (m_agg["task"] == task)]
                if len(mm):
                    ax.axhline(float(mm["mean"].iloc[0]), color="grey", linestyle="--", linewidth=0.8,
                               label="majority class")
                ax.set_xscale("log")
                ax.set_title(f"{model}: {task}")
                if r == len(models) - 1:
                    ax.set_xlabel("trainable parameters / model parameters")
                if c == 0:
                    ax.set_ylabel(f"{split} {metric}")
        handles, labels = [], []
        for ax in axes.ravel():
            for h, lab in zip(*ax.get_legend_handles_labels()):
                if lab not in labels:
                    handles.append(h)
                    labels.append(lab)
        fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=min(4, len(labels)))
        fig.tight_layout()
        out = save(fig, stem, formats)
        plt.close(fig)
    return out


def experiment_figures(df, summary, folder: Path, formats=("pdf", "png")) -> list[Path]:
    """The default figure set of an experiment, under ``<folder>/figures``.

    ``df`` is the tidy table (with tuning-baseline rows, if any: then ``baselines_vs_params`` is drawn).
    """
    folder = Path(folder) / "figures"
    out = []
    word = summary[summary["level"] == "word"] if "level" in summary else summary
    out += accuracy_by_layer(summary, folder / "accuracy_by_layer", formats)
    for task in sorted(word["task"].unique()) if "level" in summary else []:
        out += task_report(summary, task, folder / f"report_{task}", formats)
    out += sentence_poolings(summary, folder / "sentence_poolings", formats)
    if len(_models(word)) > 1:
        out += relative_depth(summary, folder / "relative_depth", formats)
    out += heatmap(summary, folder / "heatmap", formats)
    if df is not None and "method" in df and df["method"].isin(TUNING_METHODS).any():
        out += baselines_vs_params(df, folder / "baselines_vs_params", formats)
    from probekit.report.significance_figures import significance_figures

    out += significance_figures(folder.parent, summary, formats)  # sentence bands, best-layer confusion matrices
    return out
