"""Paper-ready figures from the tidy results table (layer 0 = embedding output on every x-axis).

* ``accuracy_by_layer``: test accuracy by layer, one line per task with a 95% CI band, each
  task's majority baseline dashed, the random-weights model dotted.
* ``report_<task>``: per task, (a) accuracy with CI band, control-task accuracy, random-weights
  model, majority and the expected layer; (b) selectivity; (c) MDL codelength.
* ``sentence_poolings``: per sentence task, accuracy by layer for each pooling (cls/mean/last).
* ``relative_depth``: models of different depth on one axis (layer / number of layers).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from probekit.report.style import ONE_COLUMN, TWO_COLUMN, color, paper_style, save

CAUSAL_NOTE = "decoder: a word's state sees only its left context"


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
    models = sorted({m for m in s["model"].unique() if "@random" not in m})
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
                r = _curve(s, model=f"{model}@random", task=task, probe=probe)
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


def task_report(summary, task: str, stem: Path, formats=("pdf", "png"), *, probe="linear") -> list[Path]:
    """(a) accuracy + control + random weights + majority + expected layer, (b) selectivity, (c) MDL."""
    s = _sel(summary, task=task)
    models = _models(s)
    with paper_style() as plt:
        fig, axes = plt.subplots(1, 3, figsize=(TWO_COLUMN, 2.2))
        for mi, model in enumerate(models):
            col = color(mi)
            c = _curve(s, model=model, task=task, probe=probe)
            if c is None:
                continue
            x, m, lo, hi = c
            ax = axes[0]
            ax.plot(x, m, marker="o", color=col, label=f"{model}")
            ax.fill_between(x, lo, hi, color=col, alpha=0.2, linewidth=0)
            cc = _curve(s, model=model, task=task, probe=probe, control=True)
            if cc is not None:
                ax.plot(cc[0], cc[1], color=col, linestyle="-.", label=f"{model} control task")
                ax.fill_between(cc[0], cc[2], cc[3], color=col, alpha=0.12, linewidth=0)
            r = _curve(s, model=f"{model}@random", task=task, probe=probe)
            if r is not None:
                ax.plot(r[0], r[1], color=col, linestyle=":", label=f"{model}@random")
            maj = _majority(s, model, task)
            if maj is not None:
                ax.axhline(maj, color="grey", linestyle="--", linewidth=0.8, label="majority" if mi == 0 else None)
            el = _sel(s, model=model, metric="expected_layer", probe=probe)
            if len(el) and np.isfinite(float(el["mean"].iloc[0])):
                ax.axvline(float(el["mean"].iloc[0]), color=col, linewidth=0.8, alpha=0.6)
                ax.annotate(f"E[l]={float(el['mean'].iloc[0]):.1f}", (float(el["mean"].iloc[0]), ax.get_ylim()[0]),
                            fontsize=6, color=col, rotation=90, va="bottom", ha="right")
            sel = _curve(s, model=model, task=task, metric="selectivity", probe=probe)
            if sel is not None:
                axes[1].plot(sel[0], sel[1], marker="o", color=col, label=model)
                axes[1].fill_between(sel[0], sel[2], sel[3], color=col, alpha=0.2, linewidth=0)
            for mname, ls in ((model, "-"), (f"{model}@random", ":")):
                md = _curve(s, model=mname, task=task, metric="mdl_codelength_kbits", probe=probe, split="train")
                if md is not None:
                    axes[2].plot(md[0], md[1], marker="o" if ls == "-" else None, linestyle=ls, color=col, label=mname)
                    axes[2].fill_between(md[0], md[2], md[3], color=col, alpha=0.2, linewidth=0)
        axes[0].set_title(f"{task}: accuracy (95% CI)")
        axes[0].set_ylabel("test accuracy")
        axes[1].set_title("selectivity = task − control")
        axes[2].set_title("MDL online codelength")
        axes[2].set_ylabel("kbits (lower = easier to extract)")
        for ax in axes:
            ax.set_xlabel("layer (0 = embeddings)")
        axes[0].legend(loc="lower center", fontsize=6)
        if axes[2].lines:
            axes[2].legend(fontsize=6)
        fig.tight_layout()
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
    """Models of different depth side by side on relative depth (layer / number of layers)."""
    s = summary[summary["level"] == "word"] if "level" in summary else summary
    models = models or _models(s)
    tasks = sorted(s["task"].unique())
    with paper_style() as plt:
        fig, axes = plt.subplots(1, len(tasks), figsize=(TWO_COLUMN, 2.0), squeeze=False, sharex=True)
        for t, task in enumerate(tasks):
            ax = axes[0][t]
            for i, model in enumerate(models):
                c = _curve(s, model=model, task=task, probe=probe)
                if c is None:
                    continue
                n = float(_sel(s, model=model)["n_layers"].astype(float).iloc[0])
                kind = _kind(s, model)
                ax.plot(c[0] / n, c[1], marker="o", markersize=2, color=color(i), label=f"{model} ({kind})",
                        linestyle="-" if kind == "encoder" else "--")
                ax.fill_between(c[0] / n, c[2], c[3], color=color(i), alpha=0.2, linewidth=0)
            ax.set_title(task)
            ax.set_xlabel("relative depth (layer / L)")
            if t == 0:
                ax.set_ylabel("test accuracy")
        axes[0][0].legend(fontsize=6)
        fig.text(0.5, -0.08, "Decoder (dashed): a word's state sees only its left context; "
                 "encoder (solid): both sides.", ha="center", fontsize=6)
        out = save(fig, stem, formats)
        plt.close(fig)
    return out


def experiment_figures(df, summary, folder: Path, formats=("pdf", "png")) -> list[Path]:
    """The default figure set of an experiment, under ``<folder>/figures``."""
    folder = Path(folder) / "figures"
    out = []
    out += accuracy_by_layer(summary, folder / "accuracy_by_layer", formats)
    for task in sorted(summary[summary.get("level", "word") == "word"]["task"].unique()) if "level" in summary else []:
        out += task_report(summary, task, folder / f"report_{task}", formats)
    out += sentence_poolings(summary, folder / "sentence_poolings", formats)
    if len(_models(summary[summary["level"] == "word"])) > 1:
        out += relative_depth(summary, folder / "relative_depth", formats)
    return out
