"""Cost of the erasure study against extraction of the same sentences (one line, a ratio).

Measured side by side in one process on the same N sentences of EWT dev and the same model:
  * extraction: a fresh activation store of all layers (probekit.activations.extract.extract);
  * erasure: LEACE fitted on every layer of that store (aux_verb) plus the intervention for every layer
    (probekit.causal.effects.intervention_effects: one clean run, and per layer the eraser's and the control's runs,
    with the loss for a decoder).
Prints seconds of each and the ratio erasure / extraction. The intervention is 2 x (layers) + 1 forward passes, so
the ratio is dominated by 2 x n_layers; what the benchmark guards is that nothing beyond those passes costs much.
Run: `python benchmarks/erasure_bench.py [--model minilm] [--sentences 200]` (about a minute for minilm on 2 cores).
"""
from __future__ import annotations

import argparse
import tempfile
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--sentences", type=int, default=200)
    args = ap.parse_args()

    from probekit.activations.extract import extract
    from probekit.activations.models import load_model
    from probekit.causal.effects import intervention_effects
    from probekit.causal.erasure import fit_erasers
    from probekit.causal.intervene import lm_head_weight
    from probekit.data.conllu_io import read_conllu
    from probekit.data.datasets import locate
    from probekit.tasks import get_task

    sents = read_conllu(locate("ud_ewt", "dev"), limit=args.sentences)
    lm = load_model(args.model, device="cpu")
    task = get_task("aux_verb")
    with tempfile.TemporaryDirectory() as root:
        t = time.perf_counter()
        store = extract(lm, sents, store_root=root, dtype="float32", progress=False)
        t_extract = time.perf_counter() - t
        t = time.perf_counter()
        erasers = fit_erasers(store, task, sents, weights_hash=lm.weights_hash)
        t_fit = time.perf_counter() - t
    y = task.encode(sents)
    head = lm_head_weight(lm) if lm.kind == "decoder" else None
    t = time.perf_counter()
    intervention_effects(lm, sents, y, erasers.erasers, majority=0, head=head)
    t_int = time.perf_counter() - t
    n = lm.num_layers + 1
    print(f"erasure bench ({args.model}, {len(sents)} EWT dev sentences, {n} layers, aux_verb): extraction "
          f"{t_extract:.1f} s; LEACE fit {t_fit:.1f} s + intervention {t_int:.1f} s ({2 * n + 1} forward passes) = "
          f"{(t_fit + t_int) / t_extract:.1f} x extraction")


if __name__ == "__main__":
    main()
