"""Figure of the per-head probes (:mod:`probekit.runner.head_probes`): test accuracy by layer x head.

:func:`heads_heatmap` draws, for one model, one panel per task: a heatmap of the test accuracy of the probe on each
head's slice of the ``heads`` site (rows: blocks 1..L, columns: heads), each cell written in percent, with the
task's majority-class test accuracy (its ``baseline`` row) in the panel title for reference. Returns the Figure; draws into ``ax=``
(one task) when given.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from probekit.errors import ConfigError
from probekit.report.style import TWO_COLUMN, finish, new_figure, paper_style

HEAD_PREFIX = "heads."


def head_grid(df, model: str, task: str) -> tuple[list[int], np.ndarray]:
    """(blocks, ``[blocks, heads]`` test accuracy) of one model and task from a per-head results table."""
    sel = df[(df.model == model) & (df.task == task) & (df.split == "test") & (df.metric == "accuracy")
             & df.site.astype(str).str.startswith(HEAD_PREFIX)]
    if sel.empty:
        raise ConfigError(f"heads_heatmap: no per-head rows for model {model!r} and task {task!r}.")
    heads = sel.site.str.slice(len(HEAD_PREFIX)).astype(int)
    layers = sorted(int(x) for x in sel.layer.unique())
    grid = np.full((len(layers), int(heads.max()) + 1), np.nan)
    for layer, h, v in zip(sel.layer.astype(int), heads, sel.value.astype(float)):
        grid[layers.index(layer), h] = v
    return layers, grid


def _majority(df, model: str, task: str) -> str:
    sel = df[(df.model == model) & (df.task == task) & (df.method == "baseline") & (df.metric == "accuracy")]
    return f"; majority {100 * float(sel.value.iloc[0]):.1f}" if len(sel) else ""


def heads_heatmap(df, stem: Path | None = None, formats=("pdf", "png"), *, model: str | None = None,
                  task: str | None = None, ax=None):
    """Test accuracy (%) by block x head for one model (``model``, or the only one), every task of ``df`` (or
    ``task``). Saved to ``stem`` when given."""
    heads_rows = df[df.site.astype(str).str.startswith(HEAD_PREFIX)]
    models = sorted(heads_rows.model.unique())
    if model is None:
        if len(models) != 1:
            raise ConfigError(f"heads_heatmap: the table has several models ({', '.join(models)}); name one.")
        model = models[0]
    tasks = [task] if task is not None else sorted(heads_rows[heads_rows.model == model].task.unique())
    if ax is not None and len(tasks) != 1:
        raise ConfigError("heads_heatmap: with ax= one task is drawn; name it with task=.")
    with paper_style():
        if ax is None:
            fig, axes = new_figure((TWO_COLUMN, 0.4 + 2.2 * len(tasks)), nrows=len(tasks))
            axs = [a[0] for a in axes]
        else:
            fig, axs = ax.figure, [ax]
        for a, t in zip(axs, tasks):
            layers, grid = head_grid(df, model, t)
            im = a.imshow(100 * grid, cmap="viridis", aspect="auto", origin="lower")
            a.set_yticks(range(len(layers)), [str(x) for x in layers])
            a.set_xticks(range(grid.shape[1]))
            a.set_xlabel("head")
            a.set_ylabel("layer (block)")
            a.grid(False)
            digits = 1 if 100 * (np.nanmax(grid) - np.nanmin(grid)) < 5 else 0  # a narrow range needs a decimal
            for i in range(grid.shape[0]):
                for j in range(grid.shape[1]):
                    if np.isfinite(grid[i, j]):
                        a.text(j, i, f"{100 * grid[i, j]:.{digits}f}", ha="center", va="center", fontsize=5,
                               color="white" if grid[i, j] < np.nanmean(grid) else "black")
            a.set_title(f"{Path(model).name} {t}: test accuracy (%) of each head's probe"
                        + _majority(df, model, t))
            fig.colorbar(im, ax=a, fraction=0.03)
        return finish(fig, stem, formats)
