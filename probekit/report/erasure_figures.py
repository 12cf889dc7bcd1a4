"""Figures of the erasure study (:mod:`probekit.runner.erasure`): one per model x task x eraser, by layer.

:func:`erasure_report` draws, side by side, what the probe says and what erasing does, from the numbers of
:func:`probekit.report.erasure_tables.erasure_table` (the tables and the figure show the same numbers):

* **accuracy**: the linear probe's test accuracy (band: 95% CI over seeds when there are several), the linear and MLP
  probes retrained on the erased features, the majority class (dashed);
* **selectivity** and **MDL codelength**, when the run made them;
* one panel per **effect** of erasing the layer (next-token loss change after a focus word and over all subwords;
  the other tasks' probe accuracy change at ``l + k``, one line per task and offset; the sentence embedding's
  cosine to the clean one): the eraser solid, the random-subspace control dashed in the same colour, each with its
  95% bootstrap band over test sentences, and 0 (or cosine 1) dotted.

:func:`erasure_figures` writes one such figure per model x task x eraser of a results table (``probekit run`` calls it
when the config has an ``erasure:`` section; ``probekit report`` redraws them).
"""
from __future__ import annotations

import math
from pathlib import Path

from probekit.errors import ConfigError
from probekit.report.erasure_tables import EFFECT_ORDER, effect_headers, effect_key, erasure_table
from probekit.report.style import TWO_COLUMN, color, figure_paths, finish, new_figure, paper_style
from probekit.report.tables import summarize

#: Effect families drawn in one panel each: family -> (title, y label, the value of "no effect", scale).
PANELS = {"loss_change_next": ("Δ loss after a focus word", "nats", 0.0, 1.0),
          "loss_change_all": ("Δ loss, all subwords", "nats", 0.0, 1.0),
          "accuracy_change": ("Δ other tasks' probe accuracy", "points", 0.0, 100.0),
          "embedding_cosine": ("sentence embedding vs clean", "cosine", 1.0, 1.0)}


def _effect_columns(part) -> list[str]:
    skip = ("_lo", "_hi", "_control")
    return sorted((c for c in part if c.split(":", 1)[0] in EFFECT_ORDER and not c.endswith(skip)
                   and not c.startswith("loss_clean")), key=effect_key)


def _band(ax, x, part, col: str, scale: float, c: str, style: str, label: str) -> bool:
    if col not in part or part[col].isna().all():
        return False
    keep = part[col].notna().to_numpy()
    xs, v = x[keep], scale * part[col].to_numpy(dtype=float)[keep]
    ax.plot(xs, v, linestyle=style, marker="o" if style == "-" else None, color=c, label=label)
    if col + "_lo" in part and col + "_hi" in part:
        lo, hi = (scale * part[col + e].to_numpy(dtype=float)[keep] for e in ("_lo", "_hi"))
        ax.fill_between(xs, lo, hi, color=c, alpha=0.2 if style == "-" else 0.1, linewidth=0)
    return True


def _pick(table, what: str, value):
    values = sorted(set(table[what]))
    if value is None:
        return values[0]
    if value not in values:
        raise ConfigError(f"erasure_report: no erasure rows for {what} {value!r}; the table has {values}.")
    return value


def erasure_report(summary, *, model: str | None = None, task: str | None = None, method: str | None = None,
                   stem: Path | None = None, formats=("pdf", "png")):
    """The figure of one model x task x eraser (the first of each unless named) from a summary
    (:func:`probekit.report.tables.summarize`) or a results table (summarised here); None without erasure rows."""
    from matplotlib.ticker import MaxNLocator

    if "mean" not in summary:
        summary = summarize(summary)
    table = erasure_table(summary)
    if table.empty:
        return None
    model = _pick(table, "model", model)
    task = _pick(table[table["model"] == model], "task", task)
    method = _pick(table[(table["model"] == model) & (table["task"] == task)], "method", method)
    part = table[(table["model"] == model) & (table["task"] == task) & (table["method"] == method)]
    part = part.sort_values("layer").dropna(axis=1, how="all")
    x = part["layer"].to_numpy(dtype=float)
    effects = _effect_columns(part)
    families = [f for f in EFFECT_ORDER if any(e.split(":", 1)[0] == f for e in effects)]
    panels = ["accuracy"] + [k for k in ("selectivity", "mdl_kbits") if k in part] + families
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    with paper_style():
        fig, axes = new_figure((TWO_COLUMN, 2.1 * nrows + 0.5), nrows, ncols)
        flat = list(axes.ravel())
        for ax in flat[len(panels):]:
            ax.set_visible(False)
        for ax, panel in zip(flat, panels):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.ticklabel_format(axis="y", useOffset=False)
            ax.set_xlabel("erased layer (0 = embeddings)" if panel in families else "layer (0 = embeddings)")
            if panel == "accuracy":
                if "accuracy" in part:
                    ci = part["accuracy_ci"].fillna(0) if "accuracy_ci" in part else 0
                    _band(ax, x, part.assign(accuracy_lo=part["accuracy"] - ci, accuracy_hi=part["accuracy"] + ci),
                          "accuracy", 100, color(0), "-", "probe")
                _band(ax, x, part, "linear_after", 100, color(3), "-", "linear, erased")
                _band(ax, x, part, "mlp_after", 100, color(2), "-", "MLP, erased")
                if "majority" in part:
                    ax.axhline(100 * float(part["majority"].iloc[0]), color="grey", linestyle="--", linewidth=0.8,
                               label="majority class")
                ax.set_title(f"{task}: accuracy")
                ax.set_ylabel("test accuracy (%)")
                ax.legend(loc="best")
            elif panel == "selectivity":
                _band(ax, x, part, "selectivity", 100, color(0), "-", "selectivity")
                ax.set_title("selectivity = task − control")
                ax.set_ylabel("points")
            elif panel == "mdl_kbits":
                _band(ax, x, part, "mdl_kbits", 1, color(0), "-", "MDL")
                ax.set_title("MDL online codelength")
                ax.set_ylabel("kbits (lower = easier)")
            else:
                title, unit, zero, scale = PANELS[panel]
                ax.axhline(scale * zero, color="0.3", linestyle=":", linewidth=0.8)
                for i, e in enumerate(e for e in effects if e.split(":", 1)[0] == panel):
                    name = effect_headers(e)[1].split(" (")[0] if panel == "accuracy_change" else method
                    name = name.replace("Δ acc. ", "")
                    _band(ax, x, part, e, scale, color(i), "-", name)
                    _band(ax, x, part, e + "_control", scale, color(i), "--",
                          f"{name} (control)" if panel == "accuracy_change" else "random subspace (control)")
                ax.set_title(title)
                ax.set_ylabel(unit)
                ax.legend(loc="best", fontsize=6)
        fig.suptitle(f"{model}: erasing {task} ({method}); bands: 95% CI", fontsize=8)
        return finish(fig, stem, formats)


def erasure_figures(df, folder: Path, formats=("pdf", "png")) -> list[Path]:
    """One :func:`erasure_report` per model x task x eraser of the results table ``df`` into ``folder``
    (``erasure_<model>_<task>[_<method>]``; the method is named when a table holds more than one); the paths written."""
    summary = summarize(df) if "mean" not in df else df
    table = erasure_table(summary)
    out: list[Path] = []
    if table.empty:
        return out
    several = table["method"].nunique() > 1
    for (model, task, method), _ in table.groupby(["model", "task", "method"], sort=True):
        name = str(model).replace("/", "_").replace("@", "_")
        stem = Path(folder) / (f"erasure_{name}_{task}" + (f"_{method}" if several else ""))
        erasure_report(summary, model=model, task=task, method=method, stem=stem, formats=formats)
        out += figure_paths(stem, formats)
    return out

