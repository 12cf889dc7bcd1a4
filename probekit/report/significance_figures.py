"""Figures of the uncertainty over test sentences and of the error analysis (:mod:`probekit.results.analysis`).

* ``sentence_bands``: test accuracy by layer, one panel per model, each task with its 95% sentence-bootstrap band;
  the best layer (chosen on dev) is a star, the layers *not* significantly worse than it (paired permutation test,
  Holm, alpha 0.05) are filled circles, the significantly worse ones hollow.
* ``confusion_<model>__<task>__<probe>__<pooling>__L<layer>``: the row-normalised confusion matrix of the best
  layer (linear probes of pretrained models).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from probekit.activations.models import ModelName
from probekit.report.style import ONE_COLUMN, TWO_COLUMN, color, new_figure, paper_style, save
from probekit.results.analysis import confusion_file
from probekit.results.sentence_stats import best_layers
from probekit.results.table import control_mask

__all__ = ["sentence_bands", "confusion_matrix", "significance_figures"]


def sentence_bands(summary, tests, stem: Path, formats=("pdf", "png"), *, probe: str = "linear") -> list[Path]:
    s = summary[(summary["metric"] == "accuracy") & (summary["split"] == "test") & (summary["probe"] == probe)
                & control_mask(summary, False) & (summary["layer"].astype(str) != "")]
    if "sent_lo" not in s or s["sent_lo"].isna().all():
        return []
    models = sorted({m for m in s["model"].unique() if not ModelName.parse(m).is_random}) or sorted(s["model"].unique())
    vs_best = tests[(tests["comparison"] == "vs_best") & (tests["metric"] == "accuracy")] if len(tests) else tests
    with paper_style():
        # constrained layout with the legend outside below: nothing is clipped at the documented width
        fig, axes = new_figure((ONE_COLUMN if len(models) == 1 else TWO_COLUMN, 3.0), 1, len(models), sharey=True)
        for ax, model in zip(axes[0], models):
            for i, (task, part) in enumerate(s[s["model"] == model].groupby("task", sort=True)):
                part = part.assign(layer=part["layer"].astype(float).astype(int)).sort_values("layer")
                x, m = part["layer"].to_numpy(), part["mean"].astype(float).to_numpy()
                ax.plot(x, m, color=color(i), label=task, linewidth=1)
                ax.fill_between(x, part["sent_lo"].astype(float), part["sent_hi"].astype(float), color=color(i),
                                alpha=0.25, linewidth=0)
                t = vs_best[(vs_best["model"] == model) & (vs_best["task"] == task)] if len(vs_best) else vs_best
                if not len(t):
                    continue
                best = int(t["layer_b"].iloc[0])
                worse = {int(a) for a, sig, d in zip(t["layer_a"], t["significant"], t["diff"]) if sig and d < 0}
                for layer, y in zip(x, m):
                    if layer == best:
                        ax.plot(layer, y, marker="*", markersize=8, color=color(i))
                    else:
                        ax.plot(layer, y, marker="o", markersize=4, color=color(i),
                                markerfacecolor="white" if layer in worse else color(i))
            ax.set_title(model)
            ax.set_xlabel("layer (0 = embeddings)")
        axes[0][0].set_ylabel("test accuracy")
        from matplotlib.lines import Line2D

        handles, labels = axes[0][0].get_legend_handles_labels()
        handles += [Line2D([], [], marker="*", color="grey", linestyle=""),
                    Line2D([], [], marker="o", color="grey", linestyle=""),
                    Line2D([], [], marker="o", color="grey", markerfacecolor="white", linestyle="")]
        labels += ["best (dev)", "not sig. worse", "sig. worse"]
        fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 3), fontsize=6)
        out = save(fig, stem, formats)
    return out


def confusion_matrix(matrix, title: str, stem: Path, formats=("pdf", "png")) -> list[Path]:
    """``matrix``: gold x predicted counts (DataFrame, rows gold); drawn row-normalised (recall on the diagonal)."""
    m = matrix.to_numpy(dtype=np.float64)
    norm = m / np.maximum(m.sum(1, keepdims=True), 1)
    n = len(matrix)
    with paper_style() as plt:
        size = min(TWO_COLUMN, max(ONE_COLUMN * 0.8, 0.3 * n + 1))
        fig, ax = plt.subplots(figsize=(size, size))
        im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        ax.set_xticks(range(n), [str(c) for c in matrix.columns], rotation=90)
        ax.set_yticks(range(n), [str(r) for r in matrix.index])
        ax.set_xlabel("predicted")
        ax.set_ylabel("gold")
        ax.set_title(title)
        if n <= 20:
            for r in range(n):
                for c in range(n):
                    if m[r, c]:
                        ax.text(c, r, f"{norm[r, c]:.2f}", ha="center", va="center", fontsize=5,
                                color="white" if norm[r, c] > 0.6 else "black")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        out = save(fig, stem, formats)
        plt.close(fig)
    return out


def significance_figures(folder: Path, summary, formats=("pdf", "png")) -> list[Path]:
    """The figures of the module doc for a results folder holding ``significance.csv`` and ``errors/``."""
    import pandas as pd

    folder = Path(folder)
    out = []
    if (folder / "significance.csv").is_file():
        try:
            tests = pd.read_csv(folder / "significance.csv")
        except pd.errors.EmptyDataError:
            tests = pd.DataFrame()
        out += sentence_bands(summary, tests, folder / "figures" / "sentence_bands", formats)
    for (model, task, probe, pooling), layer in sorted(best_layers(summary).items()):
        path = folder / "errors" / "confusion" / confusion_file(model, task, probe, pooling, layer)
        if probe == "linear" and not ModelName.parse(model).is_random and path.is_file():
            m = pd.read_csv(path, index_col=0)
            out += confusion_matrix(m, f"{model} {task}, layer {layer}",
                                    folder / "figures" / ("confusion_" + confusion_file(model, task, probe, pooling,
                                                                                          layer)[:-4]), formats)
    return out
