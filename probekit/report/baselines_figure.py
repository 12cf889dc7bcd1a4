"""The tuning-baselines figure: test accuracy against the fraction of trainable parameters (log x), each tuning
method (fine-tuning, prompt / prefix tuning, adapters, LoRA) a marker, the linear probes of every layer a connected
series at the probe's own (tiny) fraction. Returns the Figure, saved only when given a stem (see
:mod:`probekit.report.figures`)."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from probekit.errors import DataError
from probekit.report.style import TWO_COLUMN, color, finish, new_figure, paper_style
from probekit.results.stats import mean_ci
from probekit.results.table import control_mask

log = logging.getLogger(__name__)

#: Tuning baselines (``method`` column) and their markers in :func:`baselines_vs_params`.
TUNING_METHODS = {"finetune": ("o", "full fine-tuning"), "prompt_tuning": ("^", "prompt tuning"),
                  "prefix_tuning": ("v", "prefix tuning"), "adapter": ("s", "adapters"), "lora": ("D", "LoRA")}


def _agg(df, keys: list[str], col: str = "value"):
    """Mean and 95% CI over seeds of ``col`` per ``keys`` group (tidy table -> summary-like frame)."""
    import pandas as pd


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


def baselines_vs_params(data, stem: Path | None = None, formats=("pdf", "png"), *, metric: str = "accuracy",
                        split: str = "test", probe: str = "linear", models: list[str] | None = None,
                        tasks: list[str] | None = None):
    """Test ``metric`` against the fraction of trainable parameters (log x), one panel per model × task.

    Tuning baselines (``method`` in finetune / prompt_tuning / prefix_tuning / adapter / lora, layer -1
    or empty) are one marker each with a 95% CI bar over seeds; the ``probe`` probes of every layer form a
    connected series at the probe's fraction (darker = deeper layer; the best layer is labelled), and the
    majority class is dashed.

    Args:
        data: the tidy results table (``value`` and ``trainable_fraction`` columns; probes and tuning rows
            together), or a summary-like table with ``mean``/``ci_lo``/``ci_hi`` and ``trainable_fraction``.
    Returns:
        The Figure (saved when ``stem`` is given); ``None`` when the table has no tuning-baseline rows.

    A probe row without ``trainable_fraction`` gets ``trainable_params`` / (the model's total parameters,
    derived from its tuning rows as ``trainable_params / trainable_fraction``).
    """
    import pandas as pd


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
        return None
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
    with paper_style():
        fig, axes = new_figure((TWO_COLUMN, 2.1 * len(models) + 0.5), len(models), len(tasks), sharex=True)
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
        fig.legend(handles, labels, loc="outside lower center", ncol=min(3, len(labels)))
        return finish(fig, stem, formats)
