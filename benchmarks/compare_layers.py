"""Probe test accuracy per layer of two results folders side by side, and their difference (B - A).

Used for the weights-dtype check in docs/large_models.md: the same config run with ``--weights-dtype float32``
(A) and ``--weights-dtype bfloat16`` (B). Also prints the best layer per site of one folder (``--sites A``).

Run: ``python benchmarks/compare_layers.py results/smol_float32 results/smol_bfloat16 [--task upos]``
or ``python benchmarks/compare_layers.py results/sites --sites``.
"""
from __future__ import annotations

import argparse
from pathlib import Path


def _acc(folder: str, task: str | None):
    import pandas as pd

    df = pd.read_csv(Path(folder) / "results.csv")
    df = df[(df.method == "probe") & (df.probe != "majority") & (df.split == "test") & (df.metric == "accuracy")
            & (df.control.astype(str) == "False") & df.layer.notna()]
    if task:
        df = df[df.task == task]
    return df.assign(layer=df.layer.astype(int))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("a")
    ap.add_argument("b", nargs="?")
    ap.add_argument("--task")
    ap.add_argument("--sites", action="store_true")
    args = ap.parse_args()
    if args.sites:
        from probekit.report.tables import best_layer_table, summarize
        from probekit.results.table import load_results

        summary = summarize(load_results(args.a))
        cols = ["task", "site", "best_layer", "chosen_on", "test_acc", "majority"]
        print(best_layer_table(summary)[cols].round(4).to_string(index=False))
        return
    a = _acc(args.a, args.task).groupby(["task", "layer"]).value.mean()
    b = _acc(args.b, args.task).groupby(["task", "layer"]).value.mean()
    both = a.to_frame("a").join(b.to_frame("b"), how="inner")
    both["b_minus_a"] = both.b - both.a
    print(both.round(4).to_string())
    print(f"max |b - a| = {both.b_minus_a.abs().max():.4f}; mean b - a = {both.b_minus_a.mean():+.4f} "
          f"over {len(both)} layers")


if __name__ == "__main__":
    main()
