"""How far can silver (spaCy-predicted) labels stand in for gold UD labels?

Runs spaCy over the sentences of a UD split *with the gold tokenisation* (so that silver and
gold words line up one to one), converts the parse to UD (:mod:`probekit.data.annotate`), derives
every task's labels from both, and prints per-task agreement of silver with gold:

- ``n``: items (words or sentences) whose gold label is defined;
- ``coverage``: share of those whose silver label is also defined;
- ``accuracy``: silver == gold over the ``n`` items (an undefined silver label counts as wrong);
- ``macro_f1``: macro-F1 over the task's labels, gold as reference (same convention);
- ``silver_only``: items whose silver label is defined but gold is not (they would enter a
  silver-labelled task although gold leaves them out).

It also prints unlabelled / labelled attachment scores of the converted trees, and of spaCy's
unconverted trees, as a check of the ClearNLP -> UD conversion.

Usage::

    nice -n 10 python benchmarks/silver_vs_gold.py --split test [--data-dir /path/to/ud] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from typing import Sequence

import numpy as np

log = logging.getLogger("silver_vs_gold")

DEFAULT_TASKS = ("upos", "aux_verb", "subject", "syntactic_role", "tense", "subject_number", "voice",
                 "sentence_length")
UNDEF = "<undefined>"


def _pairs(task, gold, silver) -> tuple[list[str], list[str], int]:
    """Aligned (gold, silver) labels over items with a gold label, and the silver-only count."""
    g_out, s_out, silver_only = [], [], 0
    for g_sent, s_sent in zip(gold, silver):
        g_labs, s_labs = task.label(g_sent), task.label(s_sent)
        if task.level == "sentence":
            g_labs, s_labs = [g_labs], [s_labs]
        for g, s in zip(g_labs, s_labs):
            if g is None:
                silver_only += s is not None
                continue
            g_out.append(g)
            s_out.append(UNDEF if s is None else s)
    return g_out, s_out, silver_only


def agreement(task, gold: Sequence, silver: Sequence) -> dict:
    """Agreement of silver with gold labels for one task (see the module docstring)."""
    from sklearn.metrics import f1_score

    g, s, silver_only = _pairs(task, gold, silver)
    g_arr, s_arr = np.asarray(g, dtype=object), np.asarray(s, dtype=object)
    n = len(g)
    present = [lab for lab in task.labels if lab in set(g)]
    per_label = f1_score(g, s, labels=present, average=None, zero_division=0) if n else []
    return {
        "task": task.name, "level": task.level, "task_version": task.version, "n": n,
        "coverage": float(np.mean(s_arr != UNDEF)) if n else float("nan"),
        "accuracy": float(np.mean(g_arr == s_arr)) if n else float("nan"),
        "macro_f1": float(np.mean(per_label)) if n else float("nan"),
        "silver_only": int(silver_only),
        "per_label_f1": {lab: float(f) for lab, f in zip(present, per_label)},
    }


def attachment(gold: Sequence, silver: Sequence) -> dict:
    """UAS and LAS (full UD labels, and base labels before ':') of silver trees, punctuation included."""
    tot = uas = las = las_base = 0
    for g, s in zip(gold, silver):
        for gh, sh, gd, sd in zip(g.heads, s.heads, g.deprels, s.deprels):
            tot += 1
            if gh == sh:
                uas += 1
                las += gd == sd
                las_base += gd.split(":")[0] == sd.split(":")[0]
    return {"words": tot, "UAS": uas / tot, "LAS": las / tot, "LAS_base": las_base / tot}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="ud_ewt")
    ap.add_argument("--split", default="test")
    ap.add_argument("--data-dir", default=None, help="folder holding the UD treebank (else PROBEKIT_DATA_DIR/cache)")
    ap.add_argument("--limit", type=int, default=None, help="first N sentences only")
    ap.add_argument("--model", default=None, help="spaCy pipeline (default: en_core_web_sm, else the packaged one)")
    ap.add_argument("--tasks", nargs="*", default=list(DEFAULT_TASKS))
    ap.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from probekit.data.annotate import annotate_pretokenized, load_spacy
    from probekit.data.datasets import load_split
    from probekit.tasks import get_task

    gold = load_split(args.dataset, args.split, data_dir=args.data_dir, limit=args.limit)
    nlp = load_spacy(args.model)
    model_name = f"{nlp.meta.get('lang', '?')}_{nlp.meta.get('name', '?')}-{nlp.meta.get('version', '?')}"
    t0 = time.perf_counter()
    silver = annotate_pretokenized(gold, model=nlp)
    secs = time.perf_counter() - t0
    raw = annotate_pretokenized(gold, model=nlp, convert=False)
    n_words = sum(len(s) for s in gold)
    log.info("spaCy %s annotated %d sentences (%d words) in %.1f s", model_name, len(gold), n_words, secs)

    rows = [agreement(get_task(name), gold, silver) for name in args.tasks]
    att, att_raw = attachment(gold, silver), attachment(gold, raw)

    out = sys.stdout
    out.write(f"\nSilver ({model_name}, gold tokenisation) vs gold {args.dataset} {args.split}: "
              f"{len(gold)} sentences, {n_words} words, spaCy time {secs:.1f} s\n\n")
    out.write("| task | level | n (gold defined) | silver coverage | accuracy | macro-F1 | silver-only |\n")
    out.write("|---|---|---:|---:|---:|---:|---:|\n")
    for r in rows:
        out.write(f"| {r['task']} | {r['level']} | {r['n']} | {r['coverage']:.3f} | {r['accuracy']:.3f} | "
                  f"{r['macro_f1']:.3f} | {r['silver_only']} |\n")
    out.write("\n| task | per-label F1 |\n|---|---|\n")
    for r in rows:
        if len(r["per_label_f1"]) <= 6:
            out.write(f"| {r['task']} | " + ", ".join(f"{k} {v:.3f}" for k, v in r["per_label_f1"].items()) + " |\n")
    out.write("\n| trees | UAS | LAS | LAS (base labels) |\n|---|---:|---:|---:|\n")
    out.write(f"| converted to UD | {att['UAS']:.3f} | {att['LAS']:.3f} | {att['LAS_base']:.3f} |\n")
    out.write(f"| spaCy unconverted (ClearNLP) | {att_raw['UAS']:.3f} | {att_raw['LAS']:.3f} | "
              f"{att_raw['LAS_base']:.3f} |\n")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"model": model_name, "dataset": args.dataset, "split": args.split, "sentences": len(gold),
                       "words": n_words, "tasks": rows, "attachment": att, "attachment_unconverted": att_raw},
                      fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
