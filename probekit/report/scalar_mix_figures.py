"""Tenney-style figure of the scalar-mix study: mixing weights and differential scores per task, expected layer marked.

:func:`mixing_weights` draws, for each model, one strip per task (Tenney, Das & Pavlick 2019, Figure 2): solid bars
are the full mix's weights ``s^(l)``, outlined bars the differential scores ``Delta^(l)`` of cumulative scoring, each
scaled to its own maximum within the task (negative deltas cut at -0.15 of a strip); the expected layer ``E_Delta[l]``
is a black triangle with its 95% interval over test sentences, the centre of gravity ``E_s[l]`` a hollow diamond. A
task whose gain over layer 0 is not supported by the test set has no expected layer: its deltas (noise) and expected
layer are not drawn, and the strip says "no gain". Reads the summary rows of
:mod:`probekit.runner.scalar_mix`; returns the Figure (None without those rows), and takes ``ax=`` like the other
figures.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from probekit.activations.models import ModelName
from probekit.probing.scalar_mix import MIX_PROBE
from probekit.report.style import ONE_COLUMN, TWO_COLUMN, color, finish, new_figure, only_model, paper_style


def _by_layer(part, metric: str) -> dict[int, float]:
    r = part[(part["metric"] == metric) & (part["layer"].astype(str) != "")]
    return {int(float(layer)): float(v) for layer, v in zip(r["layer"], r["mean"])}


def _one(part, metric: str) -> float:
    r = part[(part["metric"] == metric) & (part["layer"].astype(str) == "")]
    return float(r["mean"].iloc[0]) if len(r) else np.nan


def mixing_weights(summary, stem: Path | None = None, formats=("pdf", "png"), *, ax=None, model: str | None = None):
    """Mixing weights and differential scores by layer, one strip per task, one panel per model (the real models
    first, then their random-weights twins); with ``ax=``, the one ``model`` (or the only one) into that axes."""
    s = summary[summary["probe"].astype(str) == MIX_PROBE]
    if s.empty or not (s["metric"] == "mix_weight").any():
        return None
    present = sorted(set(s["model"]))
    models = [m for m in present if not ModelName.parse(m).is_random] + [m for m in present
                                                                           if ModelName.parse(m).is_random]
    if ax is not None or model is not None:
        models = only_model(models, model, "mixing_weights")
    tasks = sorted(set(s["task"]))
    own = ax is None
    with paper_style():
        if own:
            fig, axes = new_figure((ONE_COLUMN if len(models) == 1 else TWO_COLUMN, 0.42 * len(tasks) + 0.9), 1,
                                   len(models), sharey=True)
            axes = list(axes[0])
        else:
            fig, axes = ax.figure, [ax]
        drew_delta = drew_el = False
        for a, m in zip(axes, models):
            top = 0
            for i, task in enumerate(tasks):
                part = s[(s["model"] == m) & (s["task"] == task)]
                w = _by_layer(part, "mix_weight")
                if not w:
                    continue
                y0 = len(tasks) - 1 - i  # first task on top
                layers = np.array(sorted(w))
                top = max(top, int(layers.max()))
                top_layer = int(layers.max())
                wv = np.array([w[k] for k in layers])
                a.bar(layers, 0.8 * wv / max(wv.max(), 1e-12), bottom=y0, width=0.7, color=color(0), alpha=0.85,
                      label="mixing weight $s^{(\\ell)}$" if i == 0 else None)
                el = _one(part, "expected_layer")
                d = _by_layer(part, "delta")
                if d and np.isfinite(el):
                    dl = np.array(sorted(d))
                    dv = np.array([d[k] for k in dl])
                    dv = 0.8 * dv / max(np.abs(dv).max(), 1e-12)
                    a.bar(dl, np.maximum(dv, -0.15), bottom=y0, width=0.7, fill=False, edgecolor=color(3),
                          linewidth=0.8, label="$\\Delta^{(\\ell)}$ (cumulative)" if not drew_delta else None)
                    drew_delta = True
                    lo, hi = _one(part, "expected_layer_ci_low"), _one(part, "expected_layer_ci_high")
                    err = None if not (np.isfinite(lo) and np.isfinite(hi)) else [[el - lo], [hi - el]]
                    a.errorbar([el], [y0 + 0.9], xerr=err, fmt="v", color="black", markersize=4, capsize=2,
                               linewidth=0.8, label="$E_\\Delta[\\ell]$ (95% CI)" if not drew_el else None)
                    drew_el = True
                elif d:  # the deltas of a gain the test set does not support are noise: not drawn
                    a.text(top_layer + 0.4, y0 + 0.45, "no gain", ha="right", va="center", fontsize=6, color="grey")
                cg = _one(part, "center_of_gravity")
                if np.isfinite(cg):
                    a.plot([cg], [y0 + 0.9], marker="D", markersize=3.5, markerfacecolor="none",
                           markeredgecolor="black", linestyle="none", label="$E_s[\\ell]$" if i == 0 else None)
                a.axhline(y0, color="grey", linewidth=0.4)
            a.set_yticks(np.arange(len(tasks)) + 0.4)
            a.set_yticklabels(tasks[::-1])
            a.set_ylim(-0.2, len(tasks) + 0.1)
            a.set_xticks(range(0, top + 1, 1 if top <= 12 else 5))  # every layer of a small model, else every 5th
            a.set_xlabel("layer (0 = embeddings)")
            a.set_title(m, fontsize=8)
            a.grid(False)
        handles, labels = axes[0].get_legend_handles_labels()
        if handles:
            if own:
                # a one-column figure holds two legend entries per row
                fig.legend(handles, labels, loc="outside lower center",
                           ncol=min(4 if len(models) > 1 else 2, len(labels)))
            else:
                axes[0].legend(handles, labels, fontsize=6)
        return finish(fig, stem, formats)
