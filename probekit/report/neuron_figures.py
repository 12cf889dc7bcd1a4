"""Figures of the neuron-level analysis (:mod:`probekit.runner.neurons`).

* :func:`neuron_accuracy_figure`: test accuracy by layer of the probe on all neurons, on the top / random / bottom
  ``k`` neurons (retrained, mode ``keep``) and of the trained probe with the top or random ``k`` zeroed (mode
  ``zero``, dashed); shaded bands: the 95% bootstrap intervals over test sentences; the random line is the mean of
  its draws.
* :func:`neuron_ranking_figure`: where the top neurons sit: one row per layer, one column per neuron, a dark cell for
  each neuron among the layer's top ``k`` of the NeuroX ranking.
* :func:`neuron_figures`: both for every model x task of a run, saved under ``figures/``.

Both figure functions return the matplotlib Figure and draw into ``ax=`` when given one.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from probekit.errors import ConfigError
from probekit.report.style import ONE_COLUMN, color, finish, new_figure, paper_style

#: (mode, selection, label, colour index, line style)
LINES = (("all", None, "all neurons", 0, "-"), ("keep", "top", "top k", 1, "-"), ("keep", "random", "random k", 2, "-"),
         ("keep", "bottom", "bottom k", 3, "-"), ("zero", "top", "top k zeroed", 1, "--"),
         ("zero", "random", "random k zeroed", 2, "--"))


def _series(df, model: str, task: str, mode: str, probe: str, metric: str):
    sel = df[(df.model == model) & (df.task == task) & (df.method == f"neurons:{mode}") & (df.probe == probe)
             & (df.metric == metric)]
    sel = sel.assign(layer=sel.layer.astype(float)).sort_values("layer")
    return sel.layer.to_numpy(), sel.value.astype(float).to_numpy()


def _one(values, what: str, given):
    values = sorted(set(values))
    if given is not None:
        if given not in values:
            raise ConfigError(f"{what} {given!r} has no rows; the table has {values}.")
        return given
    if not values:
        raise ConfigError(f"No neuron-analysis rows (method neurons:*) to draw a {what} from.")
    return values[0]


def neuron_accuracy_figure(df, *, model: str | None = None, task: str | None = None, fraction: float | None = None,
                           ax=None, stem=None, formats=("pdf", "png")):
    """Accuracy by layer (one model, task and fraction: the first of each unless named)."""
    df = df[df.method.astype(str).str.startswith("neurons:")]
    model = _one(df.model, "model", model)
    task = _one(df[df.model == model].task, "task", task)
    fracs = [float(p.split("_k", 1)[1]) for p in df.probe.unique() if "_k" in p]
    fraction = _one(fracs, "fraction", fraction)
    with paper_style():
        if ax is None:
            fig, axes = new_figure((ONE_COLUMN, 2.3))
            ax = axes[0, 0]
        else:
            fig = ax.figure
        for mode, selection, label, c, style in LINES:
            probe = "elastic_net" if selection is None else f"{selection}_k{fraction:g}"
            x, y = _series(df, model, task, mode, probe, "accuracy")
            if not len(x):
                continue
            ax.plot(x, 100 * y, style, marker="o", markersize=3, color=color(c), label=label)
            _, lo = _series(df, model, task, mode, probe, "accuracy_ci_low")
            _, hi = _series(df, model, task, mode, probe, "accuracy_ci_high")
            if len(lo) == len(x) == len(hi):
                ax.fill_between(x, 100 * lo, 100 * hi, color=color(c), alpha=0.15, linewidth=0)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_xlabel("layer (0 = embeddings)")
        ax.set_ylabel(f"{task} accuracy (%)")
        ax.set_title(f"{Path(model).name}: k = {100 * fraction:g}% of the neurons")
        ax.legend(loc="best", fontsize="small")
        return finish(fig, stem, formats)


def neuron_ranking_figure(ranking: dict, *, fraction: float = 0.1, ax=None, stem=None, formats=("pdf", "png"),
                          title: str | None = None):
    """Where each layer's top ``fraction`` of the ranking sits (``ranking``: ``{layer: {"order": [...]}}``)."""
    if not ranking:
        raise ConfigError("No neuron ranking to draw: the run ranked no layer.")
    ranking = {int(k): v for k, v in ranking.items()}  # layer keys read back from JSON are strings
    layers = sorted(ranking)
    d = len(ranking[layers[0]]["order"])
    k = max(1, int(round(fraction * d)))
    grid = np.zeros((len(layers), d))
    for i, layer in enumerate(layers):
        order = np.asarray(ranking[layer]["order"])
        grid[i, order[:k]] = 1.0
    with paper_style():
        if ax is None:
            fig, axes = new_figure((ONE_COLUMN, 0.35 * len(layers) + 0.9))
            ax = axes[0, 0]
        else:
            fig = ax.figure
        ax.imshow(grid, aspect="auto", cmap="Greys", interpolation="nearest", vmin=0, vmax=1,
                  extent=(-0.5, d - 0.5, layers[-1] + 0.5, layers[0] - 0.5))
        ax.set_xlabel("neuron")
        ax.set_ylabel("layer")
        ax.set_yticks(layers)
        ax.set_title(title or f"top {100 * fraction:g}% neurons per layer")
        return finish(fig, stem, formats)


def neuron_figures(result, folder: Path, formats=("pdf", "png")) -> list[Path]:
    """Both figures for every model x task of a :class:`~probekit.runner.neurons.NeuronsResult`; the paths written."""
    from probekit.report.style import figure_paths

    df = result.table()
    out: list[Path] = []
    fracs = sorted({float(p.split("_k", 1)[1]) for p in df.probe.unique() if "_k" in p}) or [0.1]
    for (model, task), rank in sorted(result.rankings.items()):
        name = f"neurons_{Path(model).name.replace('@', '_')}_{task}"
        stem = Path(folder) / f"{name}_accuracy"
        neuron_accuracy_figure(df, model=model, task=task, fraction=fracs[0], stem=stem, formats=formats)
        out += figure_paths(stem, formats)
        stem = Path(folder) / f"{name}_ranking"
        neuron_ranking_figure(rank, fraction=fracs[0], stem=stem, formats=formats,
                              title=f"{Path(model).name} {task}: top {100 * fracs[0]:g}% neurons")
        out += figure_paths(stem, formats)
    return out
