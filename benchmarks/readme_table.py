"""Print the README's quickstart table (markdown) from a finished quickstart's ``summary.csv``.

Usage: ``python benchmarks/readme_table.py [results/quickstart]``. Test scores with the 95% interval over test
sentences; bold = the layer chosen on dev (accuracy rows, and the random-weights rows); controls and MDL as the mean
over seeds; MDL in kbits.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd


def _layers(df: pd.DataFrame) -> list[int]:
    return sorted(int(x) for x in df.layer.dropna().unique())


def main(folder: str = "results/quickstart") -> None:
    s = pd.read_csv(Path(folder) / "summary.csv")
    s = s[s.level == "word"]
    real, twin = "minilm", "minilm@random"
    layers = _layers(s[s.model == real])
    print("| task (metric), test | " + " | ".join(f"L{layer}" for layer in layers) + " | majority | word majority |")
    print("|---" * (len(layers) + 3) + "|")

    def pick(model, task, metric, split="test", probe="linear", control=False):
        d = s[(s.model == model) & (s.task == task) & (s.metric == metric) & (s.split == split) & (s.probe == probe)]
        if probe == "linear":
            d = d[d.control.astype(str) == str(control)]
        return d.set_index("layer")

    def best(model, task):
        dev = pick(model, task, "accuracy", "dev")["mean"]
        return int(dev.idxmax())

    def base(task, metric, probe):
        d = pick(real, task, metric, probe=probe)
        return f"{d['mean'].iloc[0]:.3f}" if len(d) else ""

    tasks = sorted(s[s.model == real].task.unique())
    for task in tasks:
        for metric, label in (("accuracy", "accuracy"), ("pos_f1", None)):
            d = pick(real, task, metric)
            if d.empty or d["mean"].isna().all():
                continue
            if label is None:
                pos = s[(s.task == task) & (s.metric == "pos_f1")]
                label = "F1 of the positive class" if pos.empty else "F1"
            b = best(real, task) if metric == "accuracy" else None
            cells = []
            for layer in layers:
                r = d.loc[float(layer)]
                c = f"{r['mean']:.3f} [{r['sent_lo']:.3f}, {r['sent_hi']:.3f}]"
                cells.append(f"**{c}**" if layer == b else c)
            print(f"| {task} ({label}) | " + " | ".join(cells) + f" | {base(task, metric, 'majority')} | "
                  f"{base(task, metric, 'word_majority')} |")
    for task in tasks:
        d = pick(real, task, "accuracy", control=True)
        if len(d):
            print(f"| control task, {task} | " + " | ".join(f"{d.loc[float(x), 'mean']:.3f}" for x in layers) + " |  |  |")
    for task in tasks:
        d = pick(twin, task, "accuracy")
        if len(d):
            b = best(twin, task)
            cells = [f"**{d.loc[float(x), 'mean']:.3f}**" if x == b else f"{d.loc[float(x), 'mean']:.3f}" for x in layers]
            print(f"| random weights, {task} | " + " | ".join(cells) + " |  |  |")
    for task in tasks:
        for model, label in ((real, "kbits"), (twin, "random weights")):
            d = pick(model, task, "mdl_codelength_kbits", split="train")
            if len(d) == 0:
                d = pick(model, task, "mdl_codelength_kbits", split="test")
            if len(d):
                print(f"| MDL {task}, {label} | " + " | ".join(f"{d.loc[float(x), 'mean']:.3f}" for x in layers)
                      + " | | |")


if __name__ == "__main__":
    main(*sys.argv[1:])
