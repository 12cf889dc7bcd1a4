"""Cost of the sentence bootstrap, the paired tests and the predictions file on a quickstart-sized synthetic table.

The quickstart probes 2 models (minilm and its random twin) x 4 word tasks (2, 2, 5 and 17 labels) x 7 layers x
3 seeds on EWT test (2,077 sentences, 25,094 words). This builds predictions of that shape (random, with a
per-layer accuracy), then times, in this process, what the runner does after its probes: the per-sentence
counts, writing ``predictions.csv.gz`` (first seed) and reading it back, the summary intervals (1000 resamples), the layer tests and the model-vs-twin tests. It prints each time
and their sum as a share of the quickstart's cold run (``--cold``, seconds, default the README's 411 s).
Run: ``python benchmarks/sentence_stats_cost.py``.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from probekit.data.conllu_io import Sentence
from probekit.results import predictions, sentence_stats


def _clock():
    """Wall and CPU seconds (on a loaded machine the CPU seconds are the fairer measure of the work done)."""
    return np.array([time.perf_counter(), time.process_time()])


TASKS = {"aux_verb": 2, "subject": 2, "syntactic_role": 5, "upos": 17}


def synthetic(n_sent=2077, n_words=25094, seed=0):
    rng = np.random.default_rng(seed)
    lens = rng.multinomial(n_words - n_sent, np.ones(n_sent) / n_sent) + 1
    sents = [Sentence.from_words([f"w{j}" for j in range(n)], sent_id=f"s{i}") for i, n in enumerate(lens)]
    sent = np.repeat(np.arange(n_sent), lens)
    widx = np.concatenate([np.arange(n) for n in lens])
    records = []
    for model in ("minilm", "minilm@random"):
        for task, C in TASKS.items():
            gold = rng.integers(0, C, sent.size)
            for layer in range(7):
                for s in (0, 1, 2):
                    right = rng.random(sent.size) < 0.8 + 0.02 * layer
                    pred = np.where(right, gold, rng.integers(0, C, sent.size))
                    records.append({"model": model, "task": task, "probe": "linear", "pooling": "first", "seed": s,
                                    "layer": layer, "gold": gold, "pred": pred, "proba": rng.random(sent.size),
                                    "sentence": sent, "word_index": widx, "n_sentences": n_sent})
    return sents, records


def summary_of(pred):
    import pandas as pd

    rows = []
    for (model, task, layer), part in pred[pred["seed"] == 0].groupby(["model", "task", "layer"]):
        acc = float((part["gold"] == part["predicted"]).mean())
        for split in ("dev", "test"):
            for metric in ("accuracy", "macro_f1") + (("pos_f1",) if TASKS[task] == 2 else ()):
                rows.append({"model": model, "task": task, "method": "probe", "probe": "linear", "control": False,
                             "pooling": "first", "layer": str(layer), "split": split, "metric": metric, "mean": acc})
    return pd.DataFrame(rows)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cold", type=float, default=411.0)
    args = ap.parse_args()
    labels = {t: [f"l{c}" for c in range(C)] for t, C in TASKS.items()}
    sents, records = synthetic()
    times = {}
    with tempfile.TemporaryDirectory() as d:
        t0 = _clock()
        counts, n = sentence_stats.counts_from_records(records, labels.__getitem__)
        times["per-sentence counts (first seed)"] = _clock() - t0
        t0 = _clock()
        predictions.write_predictions(Path(d) / predictions.FILE, [r for r in records if r["seed"] == 0], sents,
                                      labels.__getitem__)
        times["write predictions.csv.gz"] = _clock() - t0
        t0 = _clock()
        pred = predictions.read_predictions(d)
        times["read predictions.csv.gz"] = _clock() - t0
        size = os.path.getsize(Path(d) / predictions.FILE)
    summary = summary_of(pred)
    t0 = _clock()
    summary = sentence_stats.add_intervals(summary, counts, n)
    times["summary intervals (1000 resamples)"] = _clock() - t0
    t0 = _clock()
    layer = sentence_stats.layer_tests(summary, counts, n)
    times["layer tests"] = _clock() - t0
    t0 = _clock()
    best = sentence_stats.best_layers(summary)
    twin = sentence_stats.model_tests(counts, counts, best, best, n, pairs=[("minilm", "minilm@random")])
    times["model vs twin tests"] = _clock() - t0
    total = sum(times.values())[0]
    cpu = sum(times.values())[1]
    print(f"{len(pred):,} prediction rows ({size / 2**20:.1f} MiB gzip), {len(layer) + len(twin)} paired tests, "
          f"load average {os.getloadavg()[0]:.1f}")
    for k, v in times.items():
        print(f"  {k:38s} {v[0]:7.2f} s wall {v[1]:7.2f} s CPU")
    print(f"  {'total':38s} {total:7.2f} s wall {cpu:7.2f} s CPU = {100 * total / args.cold:.1f}% (wall) and "
          f"{100 * cpu / args.cold:.1f}% (CPU) of a {args.cold:.0f} s cold quickstart")


if __name__ == "__main__":
    main()
