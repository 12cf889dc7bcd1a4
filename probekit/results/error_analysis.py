"""What a probe gets wrong, from its saved test predictions (:mod:`probekit.results.predictions`).

* :func:`per_label`: precision, recall, F1 and support of every label, per layer;
* :func:`confusions`: gold x predicted counts, per layer;
* :func:`by_word_type`: accuracy of test words whose type (exact word form) was seen / not seen in the probe's train
  split, and by frequency band of the type in train (a memorisation diagnostic);
* :func:`word_majority`: the word-conditional majority baseline: each test word gets the label its type carries most
  often in train; a type not in train gets the train majority label.

Seeds: the first seed's predictions (the tables' other numbers average seeds; these look at individual errors).
"""
from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np

from probekit.results.table import classification_metrics

#: Frequency bands of a word type in the train split: (name, lowest count, highest count).
BANDS = (("unseen", 0, 0), ("1-9", 1, 9), ("10-99", 10, 99), ("100-999", 100, 999), (">=1000", 1000, None))
GROUP = ["model", "task", "probe", "pooling", "layer"]

__all__ = ["BANDS", "per_label", "confusions", "train_word_stats", "by_word_type", "word_majority"]


def _first_seed(pred):
    return pred[pred["seed"] == pred["seed"].min()]


def per_label(pred):
    """DataFrame: model, task, probe, pooling, layer, label, precision, recall, f1, support (gold count)."""
    import pandas as pd

    recs = []
    for key, part in _first_seed(pred).groupby(GROUP, sort=True):
        gold, guess = part["gold"].to_numpy(), part["predicted"].to_numpy()
        for lab in sorted(set(gold) | set(guess)):
            tp = int(((gold == lab) & (guess == lab)).sum())
            n_pred, n_gold = int((guess == lab).sum()), int((gold == lab).sum())
            p = tp / n_pred if n_pred else 0.0
            r = tp / n_gold if n_gold else 0.0
            recs.append({**dict(zip(GROUP, key)), "label": lab, "precision": p, "recall": r,
                         "f1": 2 * p * r / (p + r) if p + r else 0.0, "support": n_gold})
    return pd.DataFrame(recs)


def confusions(pred) -> dict:
    """{(model, task, probe, pooling, layer): gold x predicted count DataFrame (rows: gold labels)}."""
    import pandas as pd

    out = {}
    for key, part in _first_seed(pred).groupby(GROUP, sort=True):
        gold, guess = part["gold"].to_numpy(dtype=object), part["predicted"].to_numpy(dtype=object)
        labels = sorted(set(gold) | set(guess))
        code = {lab: i for i, lab in enumerate(labels)}
        k = len(labels)
        pairs = np.fromiter((code[g] * k + code[q] for g, q in zip(gold, guess)), dtype=np.int64, count=len(gold))
        m = pd.DataFrame(np.bincount(pairs, minlength=k * k).reshape(k, k), index=pd.Index(labels, name="gold"),
                         columns=pd.Index(labels, name="predicted"))
        out[key] = m
    return out


def train_word_stats(train_sentences, task) -> tuple[Counter, dict, str]:
    """(type counts, {type: most frequent label}, train majority label) of a word task's labelled train words."""
    ids = task.encode(train_sentences)
    words = [w for s in train_sentences for w in s.words]
    counts: Counter = Counter()
    by_type: dict = defaultdict(Counter)
    for w, c in zip(words, ids.tolist()):
        if c >= 0:
            counts[w] += 1
            by_type[w][c] += 1
    total = Counter(c for c in ids.tolist() if c >= 0)
    majority = task.labels[max(sorted(total), key=lambda c: total[c])]
    # ties between labels: the lower class id (max over sorted ids keeps the first maximum)
    best = {w: task.labels[max(sorted(c), key=lambda k: c[k])] for w, c in by_type.items()}
    return counts, best, majority


def by_word_type(pred, train_counts: dict):
    """DataFrame: model, task, probe, pooling, layer, split_by (``seen`` / ``band``), group, n, accuracy.

    ``train_counts``: task -> Counter of its labelled train word types (:func:`train_word_stats`)."""
    import pandas as pd

    recs = []
    p = _first_seed(pred)
    p = p[p["word_index"] >= 0]
    lows = np.array([lo for _, lo, _ in BANDS])  # the bands tile 0..inf in order: a count's band is the last low <= it
    for key, part in p.groupby(GROUP, sort=True):
        counts = train_counts.get(key[1])
        if counts is None:
            continue
        words = part["word"].to_numpy(dtype=object)
        n = np.fromiter((counts.get(w, 0) for w in words), dtype=np.int64, count=len(words))
        band = np.searchsorted(lows, n, side="right") - 1
        right = (part["gold"].to_numpy() == part["predicted"].to_numpy())
        for split_by, groups in (("seen", (("seen", n > 0), ("unseen", n == 0))),
                                 ("band", tuple((b, band == i) for i, (b, _, _) in enumerate(BANDS)))):
            for name, mask in groups:
                if mask.any():
                    recs.append({**dict(zip(GROUP, key)), "split_by": split_by, "group": name,
                                 "n": int(mask.sum()), "accuracy": float(right[mask].mean())})
    return pd.DataFrame(recs)


def word_majority(test_sentences, task, best: dict, majority: str) -> dict:
    """Accuracy, macro-F1 (and positive-class F1 for a binary task) of the word-conditional majority baseline."""

    ids = task.encode(test_sentences)
    words = [w for s in test_sentences for w in s.words]
    index = {lab: i for i, lab in enumerate(task.labels)}
    keep = ids >= 0
    guess = np.array([index[best.get(w, majority)] for w in words])[keep]
    return classification_metrics(ids[keep], guess, len(task.labels))
