"""Figures of the structural probes, as in Hewitt & Manning (2019).

* :func:`structural_by_layer`: UUAS and DSpr (or root accuracy and NSpr) by layer, one line per model with its 95%
  bootstrap band over test sentences, the control-structure probe dashed, the right-branching baseline as a
  horizontal line;
* :func:`tree_figure`: one sentence's gold tree (arcs above the words) over the minimum spanning tree decoded from
  a layer's predicted distances (arcs below): right edges blue, wrong ones vermillion, gold edges the probe
  missed dashed;
* :func:`distance_matrices`: the gold and predicted distance matrices of that sentence side by side.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from probekit.probing.structural import mst_edges, split_targets
from probekit.report.style import ONE_COLUMN, TWO_COLUMN, color, paper_style, save

RIGHT, WRONG, MISSING = color(0), color(3), color(3)
METRIC_LABELS = {"uuas": "UUAS", "dspr": "DSpr.", "root_acc": "Root acc.", "nspr": "NSpr."}


def _metric(df, metric: str, **kw):
    sel = df[df.metric == metric]
    for k, v in kw.items():
        sel = sel[sel[k] == v] if v is not None else sel[sel[k].isna()]
    return sel.sort_values("layer")


def structural_by_layer(df, stem: Path, formats=("pdf", "png"), *, task: str = "tree_distance",
                        probe: str = "structural") -> list[Path]:
    """Two panels (UUAS and DSpr for ``tree_distance``; root acc. and NSpr for ``tree_depth``) by layer."""
    metrics = ("uuas", "dspr") if task == "tree_distance" else ("root_acc", "nspr")
    df = df[df.task == task]
    models = sorted(df[df.probe == probe].model.unique(), key=lambda m: ("@" in m, m))
    with paper_style() as plt:
        fig, axes = plt.subplots(1, 2, figsize=(TWO_COLUMN, 2.2))
        for ax, metric in zip(axes, metrics):
            for i, m in enumerate(models):
                for ctl, style in ((False, "-"), (True, "--")):
                    cur = _metric(df[df.control.astype(bool) == ctl], metric, model=m, probe=probe)
                    if cur.empty:
                        continue
                    lab = m + (" (control structure)" if ctl else "")
                    ax.plot(cur.layer, 100 * cur.value, style, marker="o", color=color(i), label=lab)
                    lo = _metric(df[df.control.astype(bool) == ctl], f"{metric}_ci_low", model=m, probe=probe)
                    hi = _metric(df[df.control.astype(bool) == ctl], f"{metric}_ci_high", model=m, probe=probe)
                    if len(lo) == len(cur) == len(hi):
                        ax.fill_between(cur.layer, 100 * lo.value.values, 100 * hi.value.values, color=color(i),
                                        alpha=0.2, linewidth=0)
            base = _metric(df, metric, probe="right_branching")
            if len(base):
                ax.axhline(100 * base.value.iloc[0], color="0.3", linestyle=":", label="right-branching")
            ax.set_xlabel("layer (0 = embeddings)")
            ax.set_ylabel(METRIC_LABELS[metric] + (" (%)" if metric in ("uuas", "root_acc") else " (x 100)"))
        axes[0].legend(loc="best")
        fig.tight_layout()
        out = save(fig, stem, formats)
        plt.close(fig)
    return out


def _arcs(ax, edges, x, y0: float, up: bool, styles: dict):
    from matplotlib.patches import Arc

    for (i, j) in sorted(edges):
        c, ls = styles[(i, j)]
        w = abs(x[j] - x[i])
        ax.add_patch(Arc(((x[i] + x[j]) / 2, y0), w, 0.5 * w + 0.6, theta1=0 if up else 180,
                         theta2=180 if up else 360, color=c, linestyle=ls, linewidth=1.0))


def tree_figure(words, gold_distances, pred_distances, punct, stem: Path, formats=("pdf", "png"),
                title: str | None = None) -> list[Path]:
    """Gold tree above, the predicted minimum spanning tree below (punctuation left out, as in UUAS)."""
    keep = ~np.asarray(punct, dtype=bool)
    gold = mst_edges(np.asarray(gold_distances), keep)
    pred = mst_edges(np.asarray(pred_distances), keep)
    # word centres spaced by their length (in characters), so that long words do not overlap
    widths = np.array([max(len(w), 2) + 2 for w in words], dtype=float)
    x = np.cumsum(widths) - widths / 2
    span = float(x[-1] - x[0]) if len(x) > 1 else 1.0
    with paper_style() as plt:
        fig, ax = plt.subplots(figsize=(max(ONE_COLUMN, 0.07 * widths.sum()), 2.6))
        _arcs(ax, gold, x, 1.0, True, {e: (RIGHT if e in pred else MISSING, "-" if e in pred else "--")
                                       for e in gold})
        _arcs(ax, pred, x, -1.0, False, {e: (RIGHT if e in gold else WRONG, "-") for e in pred})
        for i, w in enumerate(words):
            ax.text(x[i], 0, w, ha="center", va="center", fontsize=7, color="0.5" if not keep[i] else "black")
        h = 0.25 * span + 1.5
        ax.set_xlim(0, widths.sum())
        ax.set_ylim(-h, h)
        ax.axis("off")
        ax.text(0, h * 0.95, "gold", fontsize=7, va="top")
        ax.text(0, -h * 0.95, "probe", fontsize=7, va="bottom")
        if title:
            ax.set_title(title + f" ({len(gold & pred)}/{len(gold)} edges)")
        out = save(fig, stem, formats)
        plt.close(fig)
    return out


def distance_matrices(words, gold_distances, pred_distances, stem: Path, formats=("pdf", "png")) -> list[Path]:
    """Gold tree distances and the probe's predicted squared distances, side by side."""
    with paper_style() as plt:
        fig, axes = plt.subplots(1, 2, figsize=(TWO_COLUMN, 3.1))
        for ax, M, name in zip(axes, (gold_distances, pred_distances),
                               ("gold tree distance", "predicted squared distance")):
            im = ax.imshow(np.asarray(M), cmap="viridis")
            ax.set_title(name)
            ax.set_xticks(range(len(words)))
            ax.set_yticks(range(len(words)))
            ax.set_xticklabels(words, rotation=90, fontsize=6)
            ax.set_yticklabels(words, fontsize=6)
            ax.grid(False)
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        fig.tight_layout()
        out = save(fig, stem, formats)
        plt.close(fig)
    return out


def structural_figures(result, folder: Path, formats=("pdf", "png")) -> list[Path]:
    """Every figure of a :class:`~probekit.runner.structural.StructuralResult` into ``folder``: the layer curves
    per task, and for each model's best distance layer (by UUAS) a test sentence of 8-15 words drawn as a tree
    and as distance matrices."""

    df = result.table()
    folder = Path(folder)
    out = []
    for task in sorted(set(df.task)):
        out += structural_by_layer(df, folder / f"{task}_by_layer", formats, task=task)
    test = result.test_sentences
    for (model, kind, probe, control), unit in sorted(result.records.items(), key=str):
        if kind != "distance" or control or probe != "structural" or not unit["preds"]:
            continue
        uuas = [r["uuas_correct"].sum() / max(1.0, r["uuas_total"].sum()) for r in unit["records"]]
        best = int(np.argmax(uuas))
        pick = next((i for i, p in enumerate(unit["preds"]) if 8 <= p.shape[-1] <= 15), 0)
        s = test[pick]
        gold = split_targets([s], "distance")
        name = model.replace("/", "_").replace("@", "_")
        layer = unit["layers"][best]
        out += tree_figure(s.words, gold.targets[0], unit["preds"][pick][best], gold.punct[0],
                           folder / f"tree_{name}_layer{layer}", formats, title=f"{model}, layer {layer}")
        out += distance_matrices(s.words, gold.targets[0], unit["preds"][pick][best],
                                 folder / f"distances_{name}_layer{layer}", formats)
    return out
