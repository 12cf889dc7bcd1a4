"""An experiment's scores with their uncertainty over test sentences, and which differences are significant.

Reads the per-item predictions (:mod:`probekit.results.predictions`) and applies :mod:`probekit.results.significance`:

* :func:`add_intervals`: ``sent_lo`` / ``sent_hi`` columns of the summary: the 95% sentence-bootstrap interval of every
  test score of a probe (accuracy, macro-F1, positive-class F1), at every site, of the first seed (the linear probe's seeds fit
  alike; the seeds' own spread is the summary's ``ci_lo`` / ``ci_hi``).
* :func:`layer_tests`: per model x task x probe x pooling, each layer against the best layer (chosen on dev, as the
  best-layer table does) and each layer against the next one; Holm-adjusted within each family.
* :func:`model_tests`: two models on the same test words, layer by layer and best layer against best layer.
* :func:`describe`: the significant and non-significant differences in words.

One set of resampled sentences (seeded) serves every score of a test set, so all intervals are paired; each
prediction set's products with the resamples are computed once, however many tests it is in.
"""
from __future__ import annotations

import numpy as np

from probekit.errors import DataError
from probekit.results.significance import (
    METRICS,
    Products,
    bootstrap_interval,
    holm,
    paired_from_products,
    resample_weights,
    sentence_counts,
    swap_matrix,
)
from probekit.results.table import block_outputs, control_mask

__all__ = ["N_RESAMPLES", "ALPHA", "counts_table", "counts_from_records", "add_intervals", "best_layers", "layer_tests", "model_tests",
           "describe"]

N_RESAMPLES = 1000
ALPHA = 0.05
GROUP = ["model", "task", "probe", "pooling"]


def _metrics_for(n_classes: int) -> tuple[str, ...]:
    return METRICS if n_classes == 2 else ("accuracy", "macro_f1")


def _add(out: dict, key: tuple, gold, guess, sent, n_sent: int, n_classes: int) -> None:
    out[key] = {m: sentence_counts(m, gold, guess, sent, n_sent, n_classes) for m in _metrics_for(n_classes)}


def counts_table(pred, labels_of) -> tuple[dict, int]:
    """{(model, task, probe, pooling, layer): {metric: [sentence, k] counts}} of the first seed, and the number of
    test sentences.

    Args:
        pred: the predictions DataFrame (:func:`probekit.results.predictions.read_predictions`).
        labels_of: task name -> its label list (class ids are positions in it; class 1 is the positive class).
    """
    if pred.empty:
        raise DataError("No test predictions: the experiment's tasks have no test words.")
    n_sent = int(pred["sentence"].max()) + 1
    out: dict = {}
    for task, tpart in pred.groupby("task", sort=True):
        labels = list(labels_of(task))
        index = {lab: i for i, lab in enumerate(labels)}
        tpart = tpart.assign(_g=tpart["gold"].map(index), _p=tpart["predicted"].map(index))
        for key, part in tpart.groupby(GROUP + ["layer"], sort=True):
            part = part[part["seed"] == part["seed"].min()]
            _add(out, key[:4] + (int(key[4]),), part["_g"].to_numpy(), part["_p"].to_numpy(),
                 part["sentence"].to_numpy(), n_sent, len(labels))
    return out, n_sent


def counts_from_records(records: list[dict], labels_of) -> tuple[dict, int]:
    """:func:`counts_table` from :func:`probekit.results.predictions.gather`'s records (no DataFrame)."""
    if not records:
        raise DataError("No test predictions: the experiment's tasks have no test words.")
    first: dict = {}
    for r in records:
        key = tuple(r[k] for k in GROUP) + (r["layer"],)
        if key not in first or r["seed"] < first[key]["seed"]:
            first[key] = r
    out: dict = {}
    n_sent = max(r["n_sentences"] for r in records)
    for key, r in sorted(first.items()):
        _add(out, key, r["gold"], r["pred"], r["sentence"], n_sent, len(labels_of(key[1])))
    return out, n_sent


def add_intervals(summary, counts: dict, n_sentences: int, *, site_counts: dict | None = None,
                  n_resamples: int = N_RESAMPLES, seed: int = 0, confidence: float = 0.95):
    """``summary`` with ``sent_lo`` / ``sent_hi``: the sentence-bootstrap interval of each probe's test score.

    ``counts`` holds the block outputs' (:func:`counts_table`), ``site_counts`` the sub-layer sites' ({site: counts},
    the same keys); the rows of a site without counts get none."""
    W = resample_weights(n_sentences, n_resamples, seed)
    lo = np.full(len(summary), np.nan)
    hi = np.full(len(summary), np.nan)
    s = summary
    is_test = ((s["split"] == "test") & (s["method"] == "probe") & control_mask(s, False)
               & (s["layer"].astype(str) != "")).to_numpy()
    block = s.index.isin(block_outputs(s).index)
    for i in np.flatnonzero(is_test):
        r = s.iloc[i]
        by_key = counts if block[i] else (site_counts or {}).get(r.get("site"), {})
        c = by_key.get((r["model"], r["task"], r["probe"], r["pooling"], _int(r["layer"])), {}).get(r["metric"])
        if c is not None:
            _, lo[i], hi[i] = bootstrap_interval(r["metric"], c, W, confidence)
    return summary.assign(sent_lo=lo, sent_hi=hi)


def _int(v) -> int:
    return int(float(v))


def best_layers(summary) -> dict:
    """{(model, task, probe, pooling): layer with the highest mean dev accuracy} (test accuracy without dev rows)."""
    s = block_outputs(summary)
    acc = s[(s["metric"] == "accuracy") & (s["method"] == "probe") & control_mask(s, False)
            & (s["layer"].astype(str) != "")]
    out = {}
    for key, part in acc.groupby(GROUP):
        on = part[part["split"] == "dev"]
        on = on if len(on) else part[part["split"] == "test"]
        out[key] = _int(on.loc[on["mean"].astype(float).idxmax(), "layer"])
    return out


class _Tests:
    """The swap matrix and resample weights of one test set, and each prediction set's products with them."""

    def __init__(self, n_sentences: int, n_resamples: int, seed: int):
        self.Z = swap_matrix(n_sentences, n_resamples, seed)
        self.W = resample_weights(n_sentences, n_resamples, seed)
        self.cache: dict = {}

    def __call__(self, metric: str, a, b) -> dict:
        return paired_from_products(metric, self._products(a), self._products(b))

    def _products(self, counts):
        hit = self.cache.get(id(counts))
        if hit is None:
            hit = self.cache[id(counts)] = (Products(counts, self.Z, self.W), counts)  # keeps counts alive
        return hit[0]


def _family(rows: list[dict]) -> list[dict]:
    adj = holm([r["p"] for r in rows])
    for r, p in zip(rows, adj):
        r["p_holm"] = float(p)
        r["significant"] = bool(p <= ALPHA)
    return rows


def layer_tests(summary, counts: dict, n_sentences: int, *, metrics=("accuracy", "pos_f1"),
                n_resamples: int = N_RESAMPLES, seed: int = 0):
    """Paired tests between layers (DataFrame: one row per comparison; ``comparison`` is ``vs_best`` or
    ``adjacent``; ``diff`` = score(layer_a) - score(layer_b) with its sentence-bootstrap interval)."""
    import pandas as pd

    test = _Tests(n_sentences, n_resamples, seed)
    best = best_layers(summary)
    rows: list[dict] = []
    for key, b in sorted(best.items()):
        layers = sorted(k[4] for k in counts if k[:4] == key)
        for metric in metrics:
            if b not in layers or metric not in counts[key + (b,)]:
                continue
            c = {layer: counts[key + (layer,)][metric] for layer in layers}
            fam = [dict(zip(GROUP, key), metric=metric, comparison="vs_best", layer_a=layer, layer_b=b,
                        **test(metric, c[layer], c[b])) for layer in layers if layer != b]
            rows += _family(fam)
            fam = [dict(zip(GROUP, key), metric=metric, comparison="adjacent", layer_a=hi, layer_b=lo,
                        **test(metric, c[hi], c[lo])) for lo, hi in zip(layers, layers[1:])]
            rows += _family(fam)
    return pd.DataFrame(rows)


def model_tests(counts_a: dict, counts_b: dict, best_a: dict, best_b: dict, n_sentences: int, *,
                metrics=("accuracy", "pos_f1"), n_resamples: int = N_RESAMPLES, seed: int = 0, pairs=None):
    """Paired tests of A's probes against B's on the same test words: at every layer both have, and best layer
    against best layer (``comparison`` ``same_layer`` / ``best``; Holm within each pair x task x metric).

    Two experiments (``counts_a`` is not ``counts_b``): every probe of A against every probe of B on the same task
    (also the same model name: the experiments differ in something else). One experiment: different models with the
    same probe and pooling. ``pairs``: [(model_a, model_b)] to keep (default: all).
    """
    import pandas as pd

    test = _Tests(n_sentences, n_resamples, seed)
    groups_a = {k[:4] for k in counts_a}
    groups_b = {k[:4] for k in counts_b}
    rows: list[dict] = []
    for ga in sorted(groups_a):
        for gb in sorted(groups_b):
            if ga[1] != gb[1] or (pairs is not None and (ga[0], gb[0]) not in pairs):
                continue
            if counts_a is counts_b and (ga == gb or ga[2:] != gb[2:]):  # one experiment: model against model
                continue
            for metric in metrics:
                la = {k[4]: v[metric] for k, v in counts_a.items() if k[:4] == ga and metric in v}
                lb = {k[4]: v[metric] for k, v in counts_b.items() if k[:4] == gb and metric in v}
                if not la or not lb:
                    continue
                base = dict(model=ga[0], model_b=gb[0], task=ga[1], probe=ga[2], pooling=ga[3], probe_b=gb[2],
                            pooling_b=gb[3], metric=metric)
                fam = [dict(base, comparison="same_layer", layer_a=layer, layer_b=layer,
                            **test(metric, la[layer], lb[layer])) for layer in sorted(la)
                       if layer in lb]
                if ga in best_a and gb in best_b and best_a[ga] in la and best_b[gb] in lb:
                    fam.append(dict(base, comparison="best", layer_a=best_a[ga], layer_b=best_b[gb],
                                    **test(metric, la[best_a[ga]], lb[best_b[gb]])))
                rows += _family(fam)
    return pd.DataFrame(rows)


def describe(tests) -> list[str]:
    """One sentence per family of tests: which differences are significant after Holm's correction."""
    if tests is None or len(tests) == 0:
        return []
    out = []
    keys = [k for k in ("model", "model_b", "task", "probe", "pooling", "probe_b", "pooling_b", "metric", "comparison")
            if k in tests]
    # dropna=False: the layer tests have no second model (model_b is empty), and must not be dropped
    for key, part in tests.groupby(keys, sort=True, dropna=False):
        d = dict(zip(keys, key))
        who = f"{d['model']} {d['task']} ({d['probe']}, {d['pooling']}) {d['metric']}"
        sig = part[part["significant"]]
        non = part[~part["significant"]]

        def pairs(p):
            return ", ".join(f"{a}-{b} {100 * x:+.2f} pts [{100 * lo:+.2f}, {100 * hi:+.2f}]"
                             for a, b, x, lo, hi in zip(p["layer_a"], p["layer_b"], p["diff"], p["lo"], p["hi"]))
        if d["comparison"] == "vs_best":
            b = int(part["layer_b"].iloc[0])
            tied = sorted(int(x) for x in non["layer_a"])
            out.append(f"{who}: best layer {b} (on dev); " + (
                f"not significantly different from layer(s) {tied} (Holm, alpha {ALPHA})" if tied else
                "significantly better than every other layer (Holm, alpha 0.05)") + ".")
        elif d["comparison"] == "adjacent":
            out.append(f"{who}: adjacent layers significantly different: {pairs(sig) or 'none'}; "
                       f"not significant: {pairs(non) or 'none'}.")
        else:
            other = f"{d['model_b']} ({d['probe_b']}, {d['pooling_b']})"
            out.append(f"{who} vs {other} ({d['comparison']}): significant: {pairs(sig) or 'none'}; "
                       f"not significant: {pairs(non) or 'none'}.")
    return out
