"""The disk guard: what an extraction will write, said before it starts, and a refusal when the disk has no room.

The size is computed, not estimated: the same shard plan, layers, sites, widths and dtype that
:func:`probekit.activations.extract.extract_sites` uses give every ``.npy`` file's shape, and the file's bytes are its
header plus its data. Only the small JSON files (manifest and one ``meta.json`` per shard) are left out. A store that
is already complete is reused, so it counts zero; a partly written one counts whole (the guard errs on the safe side).
"""
from __future__ import annotations

import io
import logging
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np

from probekit.activations.extract import Extractor, default_shard_words, plan_stores
from probekit.activations.store import DTYPES, plan_shards
from probekit.errors import StoreError

log = logging.getLogger(__name__)

#: Room left free after the extraction: the guard refuses a run that would leave less than this on the disk.
RESERVE_BYTES = 1 << 30

#: The config keys that shrink what an extraction writes (named in the refusal of ``probekit run``).
SHRINK_KEYS = ("layers", "sites", "train_sentences (or limit)", "dtype: bfloat16/float16 (store dtype)")
#: What the refusal advises by default: the config keys, or a bigger disk.
SHRINK_CONFIG = f"the config keys {', '.join(SHRINK_KEYS)}, or set store_dir to a bigger disk"


def npy_bytes(shape: Sequence[int], dtype) -> int:
    """Bytes of the ``.npy`` file ``np.save`` writes for an array of ``shape`` and ``dtype`` (header + data)."""
    dt = np.dtype(dtype)
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": np.lib.format.dtype_to_descr(dt), "fortran_order": False,
                                               "shape": tuple(int(x) for x in shape)})
    return buf.tell() + int(np.prod(shape, dtype=np.int64)) * dt.itemsize


def store_bytes(words_per_sentence: Sequence[int], *, n_layers: int, width: int, n_poolings: int, dtype: str,
                shard_words: int) -> int:
    """Bytes of the ``.npy`` files of one store: per shard, ``words.npy`` ``[layers, words, width]`` and one
    ``sent-<pooling>.npy`` ``[layers, sentences, width]`` per sentence pooling."""
    disk = DTYPES[dtype]
    total = 0
    for p in plan_shards(list(words_per_sentence), max_words=shard_words):
        total += npy_bytes((n_layers, p.word_end - p.word_start, width), disk)
        total += n_poolings * npy_bytes((n_layers, p.sent_end - p.sent_start, width), disk)
    return total


def extraction_bytes(model, sentences, *, sites: Sequence[str] = ("resid_post",), layers=None,
                     dtype: str = "float16", word_pooling: str | None = None, precision: str | None = "auto",
                     **where) -> int:
    """Bytes :func:`~probekit.activations.extract.extract_sites` will write for these arguments (``where``: its
    ``dataset``, ``split``, ``data_checksum`` and ``store_root``): the stores not already complete, whole."""
    ex = Extractor(model, word_pooling=word_pooling, precision=precision)
    words_per = [len(s) for s in sentences]
    return sum(store_bytes(words_per, n_layers=len(p.layers), width=p.width, n_poolings=len(ex.sentence_poolings),
                           dtype=dtype, shard_words=default_shard_words(model))
               for p in plan_stores(model, ex, sentences, sites=sites, layers=layers, dtype=dtype, **where)
               if not p.complete)


def free_bytes(path: str | Path) -> int:
    """Free bytes on the disk that holds ``path`` (its nearest existing parent)."""
    p = Path(path).resolve()
    while not p.exists() and p != p.parent:
        p = p.parent
    return shutil.disk_usage(p).free


def gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB"


def describe_stores(model, sites: Sequence[str], layers, dtype: str) -> str:
    """What an extraction writes, for the guard's messages: model, sites, layers kept, width and store dtype."""
    n_layers = len(layers) if layers is not None else model.num_layers + 1
    return (f"{model.name}: sites {', '.join(sites)}, {n_layers} of {model.num_layers + 1} layers"
            + (" (sub-layer sites: no layer 0)" if list(sites) != ["resid_post"] else "")
            + f", width {model.hidden_size}, {dtype}")


def check_disk(per_split: dict[str, int], root: str | Path, *, free: int | None = None,
               describe: str = "", shrink: str = SHRINK_CONFIG) -> None:
    """Say what the extraction will write (GB per split) and refuse it when the disk under ``root`` has no room.

    Args:
        per_split: split -> bytes still to write (0 for reused stores).
        root: the store folder.
        free: the free bytes to check against (default: the disk's; tests pass a figure).
        describe: what is written (sites, layers, width, dtype), for the message.
        shrink: how to write less, for the refusal (default: the config keys; the command line names its options).
    Raises:
        StoreError: one line naming the sizes, the free space and how to shrink the stores.
    """
    need = sum(per_split.values())
    parts = ", ".join(f"{split} {gb(n)}" for split, n in per_split.items())
    if need == 0:
        log.info("Activation stores: all found in %s (nothing to write)", root)
        return
    free = free_bytes(root) if free is None else free
    log.info("Activation stores to write in %s: %s (%s in all; %s); %s free", root, parts, gb(need), describe,
             gb(free))
    if need + RESERVE_BYTES > free:
        raise StoreError(f"Not enough disk for the activation stores in {root}: {gb(need)} to write ({parts}; "
                         f"{describe}), {gb(free)} free, {gb(RESERVE_BYTES)} kept free. Shrink them with {shrink}.")
