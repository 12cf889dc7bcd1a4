"""Stage what `benchmarks/device_check.sh` needs on a lent GPU machine into ``.devcarry/`` (git-ignored, carried).

The device tool sends the working tree and at most 64 MiB in all; the machine has PyTorch and transformers but no
network, no treebank folder and none of the packaged models. So this puts beside the tree:

* ``minilm/``: all-MiniLM-L6-v2 (the ``minilm`` alias's HF folder) with its weights stored in float16, since the
  float32 file (87 MiB) alone is over the limit. probekit loads them in float32 as always; the model it runs is
  MiniLM with each weight rounded to float16 (relative 2^-11 at most), which changes no FLOP or shape, so the
  timings are MiniLM's; the fidelity section compares precisions on this same rounded model.
* ``ewt-train-first{N}.conllu``: the first N sentences of EWT train, byte for byte.
* ``site/conllu``: the pure-Python ``conllu`` package (the machine's image lacks it).

Run here: ``python benchmarks/device_carry.py`` (then the device call names ``.devcarry`` in ``carry``).
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from probekit.activations.models import resolve  # noqa: E402
from probekit.data.datasets import locate  # noqa: E402

#: the device tool's limit on what travels (working tree and carried paths together)
CARRY_LIMIT = 64 * 2**20
TOKENIZER_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


def first_sentences(src: Path, dst: Path, n: int) -> int:
    """Copy the first ``n`` sentence blocks of a CoNLL-U file (blocks end at a blank line); returns how many."""
    count = 0
    with open(src, encoding="utf-8") as f, open(dst, "w", encoding="utf-8") as out:
        for line in f:
            out.write(line)
            if not line.strip():
                count += 1
                if count == n:
                    break
    return count


def stage(dest: Path, n_sentences: int) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "minilm").mkdir(parents=True)
    _, folder, _, _ = resolve("minilm")
    for name in TOKENIZER_FILES:
        shutil.copy2(Path(folder) / name, tmp / "minilm" / name)
    weights = load_file(str(Path(folder) / "model.safetensors"))
    save_file({k: v.to(torch.float16) if v.is_floating_point() else v for k, v in weights.items()},
              str(tmp / "minilm" / "model.safetensors"), metadata={"format": "pt"})
    got = first_sentences(locate("ud_ewt", "train"), tmp / f"ewt-train-first{n_sentences}.conllu", n_sentences)
    spec = importlib.util.find_spec("conllu")
    if spec is None or spec.origin is None:
        raise SystemExit("the conllu package is not installed here: run `make setup` first.")
    shutil.copytree(Path(spec.origin).parent, tmp / "site" / "conllu", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp / "README.txt").write_text(
        f"Staged by benchmarks/device_carry.py: minilm weights rounded to float16 (loaded in float32), the first "
        f"{got} sentences of EWT train, the conllu package.\n")
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)


def tree_bytes() -> int:
    """Bytes of what the device tool sends besides the carried paths: tracked and untracked, not ignored, files."""
    import subprocess

    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                         capture_output=True, check=True).stdout
    return sum((ROOT / p).stat().st_size for p in out.decode().split("\0") if p and (ROOT / p).is_file())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sentences", type=int, default=4000, help="EWT train sentences to carry (default 4000)")
    ap.add_argument("--dest", default=str(ROOT / ".devcarry"))
    args = ap.parse_args()
    dest = Path(args.dest)
    stage(dest, args.sentences)
    carried = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    total = carried + tree_bytes()
    print(f"{dest}: {carried / 2**20:.1f} MiB; with the working tree {total / 2**20:.1f} MiB of the device tool's "
          f"{CARRY_LIMIT / 2**20:.0f} MiB")
    if total > CARRY_LIMIT:
        raise SystemExit(f"{total / 2**20:.1f} MiB would not travel (limit {CARRY_LIMIT / 2**20:.0f} MiB): carry "
                         "fewer sentences (--sentences).")


if __name__ == "__main__":
    main()
