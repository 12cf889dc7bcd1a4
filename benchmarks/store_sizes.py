"""Store sizes: the disk guard's prediction against what a run wrote, and computed sizes for large models.

* ``--config C --store-dir D``: after ``probekit run C --store-dir D``, the size the guard predicts for the config's
  stores (probekit.activations.budget.extraction_bytes, against an empty folder so that nothing counts as reused)
  against the bytes of the stores in D: the ``.npy`` files, and every file of the store folders (with the JSON).
* ``--large``: the bytes of EWT train stores (sentence poolings mean and last, as for a decoder) for a 7B model
  (32 blocks x 4096) and a 70B one (80 x 8192), all layers vs a selection, float16 vs bfloat16.

Run: ``python benchmarks/store_sizes.py --config configs/sites.yaml --store-dir DIR [--set KEY=VALUE ...]`` (loads the model, no forward
pass), ``python benchmarks/store_sizes.py --large`` (reads the treebank only).
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path


def measured(config: str, store_dir: str, overrides: dict) -> None:
    from probekit.activations.budget import extraction_bytes
    from probekit.activations.store import ActivationStore
    from probekit.config import resolve_config
    from probekit.runner.data import ROLES, data_checksum, load_config_model, load_data

    cfg = resolve_config(config, {**overrides, "store_dir": store_dir, "device": "cpu"})
    data, fp = load_data(cfg)
    for m in cfg.models:
        lm = load_config_model(cfg, m)
        with tempfile.TemporaryDirectory() as empty:
            predicted = {role: extraction_bytes(lm, data[role], sites=cfg.sites, layers=cfg.layers, dtype=cfg.dtype,
                                                word_pooling=cfg.word_pooling, precision=cfg.precision,
                                                dataset=cfg.dataset, split=cfg.splits.get(role, role),
                                                data_checksum=data_checksum(fp[role]), store_root=empty)
                         for role in ROLES}
        # the stores the run wrote: the same folder names under store_dir
        names = {p.name for p in Path(store_dir).iterdir() if (p / "manifest.json").is_file()}
        stores = [ActivationStore(Path(store_dir) / n) for n in sorted(names)]
        npy = sum(st.nbytes() for st in stores)
        every = sum(f.stat().st_size for st in stores for f in st.path.rglob("*") if f.is_file())
        total = sum(predicted.values())
        print(f"{m}: sites {cfg.sites}, {len(stores)} stores")
        print("  predicted: " + ", ".join(f"{r} {b / 1e9:.4f} GB" for r, b in predicted.items())
              + f"; total {total:,} bytes")
        print(f"  written .npy: {npy:,} bytes (predicted / written = {total / npy:.4f})")
        print(f"  written, every file: {every:,} bytes (predicted / written = {total / every:.4f})")


def large() -> None:
    from probekit.activations.budget import store_bytes
    from probekit.data.datasets import load_split

    wp = [len(s) for s in load_split("ud_ewt", "train")]
    print(f"EWT train: {len(wp)} sentences, {sum(wp)} words; sentence poolings mean + last")

    def size(blocks, width, layers, dtype, sub=False):
        shard = max(256, (64 << 20) // (2 * (blocks + 1) * width))
        n = len([x for x in layers if x > 0]) if sub else len(layers)
        return store_bytes(wp, n_layers=n, width=width, n_poolings=2, dtype=dtype, shard_words=shard)

    for name, blocks, width, every in (("7B", 32, 4096, 4), ("70B", 80, 8192, 8)):
        all_layers, some = list(range(blocks + 1)), list(range(0, blocks + 1, every))
        print(f"{name} ({blocks} blocks x {width}): all {len(all_layers)} layers float16 "
              f"{size(blocks, width, all_layers, 'float16') / 1e9:.1f} GB; layers {some[:3]}...{some[-1]} "
              f"({len(some)}) bfloat16 {size(blocks, width, some, 'bfloat16') / 1e9:.1f} GB; those layers at "
              f"resid_post + attn_out + mlp_out bfloat16 {(size(blocks, width, some, 'bfloat16') + 2 * size(blocks, width, some, 'bfloat16', sub=True)) / 1e9:.1f} GB")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config")
    ap.add_argument("--store-dir")
    ap.add_argument("--set", action="append", default=[], help="KEY=VALUE, as the run had them")
    ap.add_argument("--large", action="store_true")
    args = ap.parse_args()
    if args.config:
        from probekit.config import parse_override

        measured(args.config, args.store_dir, dict(parse_override(x) for x in args.set))
    if args.large:
        large()


if __name__ == "__main__":
    main()
