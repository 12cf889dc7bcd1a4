"""The forward pass alone over packed rows of several widths vs padded rows (docs/design.md 23).

minilm over EWT train sentences, tokenized and aligned once beforehand; each layout is run through
``batching.make_batches`` and the model, nothing else (no pooling, no store). Real tokens per second, median of
``--repeats`` interleaved runs, fp32 and bf16 autocast (weights cast once, as extraction does). Run:
``python benchmarks/packing_rows.py [--sentences 1000] [--repeats 3] [--widths 128,256,512] [--precisions fp32,bf16]``
(bf16 by default only where the CPU has bf16 matrix units).
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import cpu_line, timed_precisions  # noqa: E402


def main() -> None:
    import torch

    from probekit.activations.align import align_batch
    from probekit.activations.batching import make_batches
    from probekit.activations.extract import Extractor
    from probekit.activations.models import load_model
    from probekit.activations.precision import forward_context
    from probekit.data.datasets import load_split

    ap = argparse.ArgumentParser()
    ap.add_argument("--sentences", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--widths", default="128,256,512", help="packed row widths, comma-separated")
    ap.add_argument("--precisions", default=None,
                    help="comma-separated; default fp32, and bf16 where the CPU has bf16 matrix units")
    args = ap.parse_args()
    precisions = args.precisions.split(",") if args.precisions else timed_precisions()
    lm = load_model("minilm", device="cpu")
    sents = load_split("ud_ewt", "train", limit=args.sentences)
    ex = Extractor(lm)
    aligned = align_batch(lm.tokenizer, sents)
    p, q = len(ex.prefix), len(ex.suffix)
    pieces = [(p + a.n_tokens + q, si, 0, 0, a.n_tokens) for si, a in enumerate(aligned)]
    layouts = {"padded rows": None, **{f"packed rows of {w}": dataclasses.replace(ex.packing, row_tokens=w)
                                       for w in map(int, args.widths.split(","))}}

    def run(packing, precision):
        t, real, computed = time.perf_counter(), 0, 0
        with torch.inference_mode(), forward_context(lm.model, "cpu", precision):
            for b in make_batches(pieces, aligned, ex.prefix, ex.suffix, ex.pad_id, batch_tokens=ex.batch_tokens,
                                  max_padding=ex.max_padding, packing=packing):
                lm.model(**b.model_inputs("cpu"), output_hidden_states=True)
                real, computed = real + b.real_tokens, computed + b.ids.size
        return real / (time.perf_counter() - t), 1 - real / computed

    print(f"minilm forward only, {len(sents)} EWT train sentences, medians of {args.repeats}; {cpu_line()}")
    for precision in precisions:
        for packing in layouts.values():
            run(packing, precision)  # warm-up (oneDNN builds a kernel per shape)
        res = {k: [] for k in layouts}
        for _ in range(args.repeats):
            for name, packing in layouts.items():
                res[name].append(run(packing, precision))
        base = statistics.median(r[0] for r in res["padded rows"])
        for name, r in res.items():
            tps = statistics.median(x[0] for x in r)
            print(f"  {precision} {name:18}: {tps:8.0f} tok/s  {tps / base:5.2f}x padded rows  padding {r[0][1]:.1%}")


if __name__ == "__main__":
    main()
