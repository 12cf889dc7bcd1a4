"""Summaries of the tidy results table: CIs over seeds, selectivity, expected layer, best layers."""
from __future__ import annotations

import numpy as np

from probekit.errors import DataError
from probekit.probing.scalar_mix import CUMULATIVE_PROBE, MIX_PROBE
from probekit.results.stats import expected_layer, over_seeds
from probekit.results.table import control_mask

KEYS = ["experiment", "model", "model_kind", "task", "level", "method", "probe", "control", "pooling", "site", "layer",
        "n_layers", "split", "metric"]


def _derived_rows(df):
    """Selectivity rows (task score − control score, per layer and seed) from the tidy table: ``selectivity`` on
    accuracy and, for a binary task, ``selectivity_f1`` on the positive class's F1 (on a task with a 0.94 majority
    accuracy selectivity is squeezed into a few points; F1 is not)."""
    import pandas as pd

    parts = []
    for metric, name in (("accuracy", "selectivity"), ("pos_f1", "selectivity_f1")):
        sc = df[(df["metric"] == metric) & (df["split"] == "test") & (df["method"] == "probe") & df["layer"].notna()]
        real = sc[control_mask(sc, False)]
        ctrl = sc[control_mask(sc, True)]
        if real.empty or ctrl.empty:
            continue
        on = [k for k in ("model", "task", "probe", "pooling", "site", "layer", "seed") if k in df]
        m = real.merge(ctrl[on + ["value"]], on=on, suffixes=("", "_ctrl"))
        m["value"] = m["value"] - m["value_ctrl"]
        m["metric"] = name
        parts.append(m[df.columns])
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=df.columns)


def summarize(df, confidence: float = 0.95):
    """Mean, 95% CI and n over seeds for every row group, plus selectivity and ``expected_layer_cummax`` per
    model × task × probe × pooling. A count metric (``results.stats.COUNT_METRICS``, e.g. ``fit_iterations``) gets
    no interval but its range over seeds, ``seed_min`` / ``seed_max`` (empty for every other metric).

    Tenney et al.'s ``expected_layer`` and ``center_of_gravity`` are rows of the scalar-mix study
    (:mod:`probekit.runner.scalar_mix`: cumulative scores and mixing weights) and are aggregated over seeds like any
    row. ``expected_layer_cummax`` is a different, cheaper number: the expected-layer formula applied to the running
    maximum of the separate per-layer probes' mean test accuracies (the best single layer so far standing in for a
    cumulative score); it needs every layer 0..L, and it is not Tenney's expected layer."""
    import pandas as pd


    full = pd.concat([df, _derived_rows(df)], ignore_index=True)
    keys = [k for k in KEYS if k in full]
    g = full.assign(**{k: full[k].astype(object).where(full[k].notna(), "") for k in keys}).groupby(keys, sort=True)
    recs = []
    for key, part in g:
        vals = part["value"].astype(float).to_numpy()
        group = dict(zip(keys, key))
        stats = over_seeds(vals, group.get("metric"), confidence)  # a count gets its range over seeds, no interval
        recs.append({**group, "mean": stats["mean"], "ci_lo": stats["ci_lo"], "ci_hi": stats["ci_hi"],
                     "n_seeds": int(len(vals)), "seed_min": stats["seed_min"], "seed_max": stats["seed_max"]})
    out = pd.DataFrame(recs)
    extra = []
    acc = out[(out["metric"] == "accuracy") & (out["split"] == "test") & (out["method"] == "probe")
              & control_mask(out, False) & (out["layer"] != "") & (out["probe"] != CUMULATIVE_PROBE)]
    for _, part in acc.groupby([k for k in ("model", "task", "probe", "pooling", "site") if k in acc]):
        part = part.sort_values("layer", key=lambda s: s.astype(int))
        scores = {int(layer): float(v) for layer, v in zip(part["layer"], part["mean"])}
        if sorted(scores) != list(range(len(scores))) or len(scores) < 2:
            continue  # a subset of layers (`layers: [0, 3, 6]`) has no differential scores
        first = part.iloc[0]
        value = expected_layer(np.maximum.accumulate([scores[k] for k in sorted(scores)]))
        extra.append({**{k: first[k] for k in keys}, "layer": "", "metric": "expected_layer_cummax", "mean": value,
                      "ci_lo": value, "ci_hi": value, "n_seeds": int(first["n_seeds"]), "split": "test"})
    if extra:
        out = pd.concat([out, pd.DataFrame(extra)], ignore_index=True)
    return out.sort_values(keys, kind="mergesort").reset_index(drop=True)


def best_layer_table(summary):
    """One line per model × task × probe × pooling: best layer, its test accuracy (± CI), majority,
    selectivity at that layer, Tenney's expected layer and centre of gravity (the scalar-mix study's, for the model,
    task and pooling; NaN without one), and MDL-best layer.

    The best layer is the one with the highest mean **dev** accuracy (``chosen_on`` = ``dev``), and its test
    accuracy is reported: picking it on test would report the maximum of several noisy test scores, an optimistic
    number. Results without dev rows fall back to test (``chosen_on`` = ``test``)."""
    import pandas as pd

    s = summary
    probe_rows = s[(s["metric"] == "accuracy") & (s["method"] == "probe") & control_mask(s, False)
                   & (s["layer"] != "") & (s["probe"] != CUMULATIVE_PROBE)]
    acc = probe_rows[probe_rows["split"] == "test"]
    dev = probe_rows[probe_rows["split"] == "dev"]
    by = [k for k in ("model", "task", "probe", "pooling", "site") if k in s]
    dev_groups = {k: g for k, g in dev.groupby(by)}
    recs = []
    for key, part in acc.groupby(by):
        model, task, probe, pooling = key[:4]
        site = key[4] if len(key) > 4 else ""
        on = dev_groups.get(key)
        if on is not None and set(on["layer"].astype(str)) >= set(part["layer"].astype(str)):
            layer = str(on.loc[on["mean"].astype(float).idxmax(), "layer"])
            best = part[part["layer"].astype(str) == layer].iloc[0]
            chosen_on = "dev"
        else:
            best = part.loc[part["mean"].astype(float).idxmax()]
            chosen_on = "test"
        sel = s[(s["model"] == model) & (s["task"] == task) & (s["probe"] == probe) & (s["pooling"] == pooling)
                & (s["method"] == "probe") & ((s["site"] == site) if "site" in s else True)]
        def one(metric, layer=None):
            r = sel[sel["metric"] == metric]
            if layer is not None:
                r = r[r["layer"].astype(str) == str(layer)]
            return float(r["mean"].iloc[0]) if len(r) else np.nan
        # Tenney's expected layer and centre of gravity: the scalar-mix study's, for this model, task and pooling
        mix = s[(s["model"] == model) & (s["task"] == task) & (s["pooling"] == pooling) & (s["probe"] == MIX_PROBE)]

        def tenney(metric):
            r = mix[mix["metric"] == metric]
            return float(r["mean"].iloc[0]) if len(r) else np.nan
        mdl = sel[sel["metric"] == "mdl_codelength_kbits"]
        mdl_best = mdl.loc[mdl["mean"].astype(float).idxmin(), "layer"] if len(mdl) else ""
        base = s[(s["model"] == model) & (s["task"] == task) & (s["method"] == "probe") & (s["metric"] == "accuracy")]
        maj, wmaj = base[base["probe"] == "majority"], base[base["probe"] == "word_majority"]
        recs.append({"model": model, "task": task, "probe": probe, "pooling": pooling,
                     "site": site, "best_layer": best["layer"],
                     "chosen_on": chosen_on,
                     "test_acc": float(best["mean"]), "ci": float(best["ci_hi"]) - float(best["mean"]),
                     # 95% interval over test sentences (results.sentence_stats), when predictions were saved
                     "sent_lo": float(best.get("sent_lo", np.nan)), "sent_hi": float(best.get("sent_hi", np.nan)),
                     "majority": float(maj["mean"].iloc[0]) if len(maj) else np.nan,
                     "word_majority": float(wmaj["mean"].iloc[0]) if len(wmaj) else np.nan,
                     "selectivity": one("selectivity", best["layer"]),
                     "selectivity_f1": one("selectivity_f1", best["layer"]), "expected_layer": tenney("expected_layer"),
                     "center_of_gravity": tenney("center_of_gravity"),
                     "mdl_best_layer": mdl_best,
                     "mdl_kbits_at_best": one("mdl_codelength_kbits", mdl_best) if mdl_best != "" else np.nan})
    out = pd.DataFrame(recs)
    if "site" in out and out["site"].isin(["", "resid_post"]).all():
        out = out.drop(columns="site")  # one site, the block outputs: the table as it was before sites
    return out


def task_row_labels(sel):
    """``sel`` with each sentence task's rows named ``task (pooling)``: a sentence task is probed once per
    sentence pooling, and those are different probes, never to be averaged into one row."""
    sent = sel["level"].astype(str) == "sentence"
    return sel.assign(task=np.where(sent, sel["task"].astype(str) + " (" + sel["pooling"].astype(str) + ")",
                                    sel["task"].astype(str)))


def unique_pivot(sel, index: list[str], what: str):
    """``sel`` pivoted to index × layer of ``mean``; a cell with more than one row is an error, not an average."""

    dup = sel.duplicated(index + ["layer"], keep=False)
    if dup.any():
        first = sel[dup].iloc[0]
        raise DataError(f"{what}: more than one summary row for " + ", ".join(f"{k}={first[k]!r}" for k in index)
                        + f", layer {first['layer']} (from experiments {sorted(set(sel[dup]['experiment']))}). "
                        "Filter the summary to one experiment first.")
    return sel.pivot_table(index=index, columns="layer", values="mean", aggfunc="first")


def layer_table(summary, *, metric: str = "accuracy", probe: str = "linear", model: str | None = None):
    """Tasks × layers matrix of the mean test metric (for the heatmap and the README); a sentence task has one row
    per pooling, ``task (pooling)``."""
    s = summary
    sel = s[(s["metric"] == metric) & (s["split"] == "test") & (s["probe"] == probe) & (s["method"] == "probe")
            & control_mask(s, False) & (s["layer"] != "")]
    if model is not None:
        sel = sel[sel["model"] == model]
    sel = task_row_labels(sel.assign(layer=sel["layer"].astype(int)))
    return unique_pivot(sel, ["model", "task"], "layer_table")
