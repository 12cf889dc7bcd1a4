"""The on-disk activation store: every layer's word (and sentence) vectors for one model × split.

Layout of a store folder (one per content key)::

    <root>/<key>/manifest.json          what made it + the list of committed shards and their checksums
    <root>/<key>/shard-00000/words.npy  [layer, word, d_model]       word vectors of this shard's sentences
    <root>/<key>/shard-00000/sent-mean.npy  [layer, sentence, d_model]  sentence vectors, one file per pooling
    <root>/<key>/shard-00000/meta.json  sentence/word ranges and sha256 of every array, per layer

A shard is written into a temporary folder, flushed and renamed into place, so a shard folder
either is complete or does not exist; the manifest is rewritten atomically after each shard.
A run killed at any moment resumes from the last committed shard and produces byte-identical
arrays. Every array's checksum is verified before the store is used; a bad shard is recomputed
(with a warning) or, in strict mode, stops the run with an error that names the file.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from probekit.data.conllu_io import atomic_write_bytes
from probekit.errors import ConfigError, StoreError

log = logging.getLogger(__name__)

STORE_FORMAT = 2
DTYPES = {"float16": np.float16, "float32": np.float32}


def store_key(spec: dict) -> str:
    """Content key of a store: sha256 of the canonical JSON of everything that determines its arrays."""
    blob = json.dumps({"format": STORE_FORMAT, **spec}, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


def _layer_digests(arr: np.ndarray) -> list[str]:
    """sha256 of each layer's bytes of a ``[layer, n, d]`` array (a memmap is read once)."""
    return [hashlib.sha256(np.ascontiguousarray(arr[i]).data).hexdigest() for i in range(arr.shape[0])]


def save_npy_atomic(path: Path, arr: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        np.save(fh, arr, allow_pickle=False)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_shard(store_dir: Path, index: int, arrays: dict[str, np.ndarray], meta: dict) -> dict:
    """Commit one shard atomically: write a temporary folder, fsync its files, rename it into place.

    Returns the shard's meta (with checksums) as recorded in the manifest.
    """
    name = f"shard-{index:05d}"
    final = store_dir / name
    tmp = store_dir / f".tmp-{name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    files = {}
    for key, arr in arrays.items():
        fname = f"{key}.npy"
        with open(tmp / fname, "wb") as fh:
            np.save(fh, arr, allow_pickle=False)
            fh.flush()
            os.fsync(fh.fileno())
        files[fname] = {"shape": list(arr.shape), "dtype": str(arr.dtype), "sha256": _layer_digests(arr)}
    meta = {**meta, "name": name, "files": files}
    atomic_write_bytes(tmp / "meta.json", json.dumps(meta, indent=1).encode())
    dfd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    if final.exists():  # a stale or bad copy (we hold the lock): replace it
        shutil.rmtree(final)
    os.rename(tmp, final)
    return meta


def verify_shard(store_dir: Path, meta: dict, *, full: bool = True) -> str | None:
    """Return None when a committed shard is intact, else a sentence saying what is wrong (naming the file)."""
    d = store_dir / meta["name"]
    for fname, info in meta["files"].items():
        path = d / fname
        if not path.is_file():
            return f"{path} is missing"
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except Exception as e:  # noqa: BLE001 - truncated or foreign files fail in many ways
            return f"{path} is unreadable ({type(e).__name__}: {e})"
        if list(arr.shape) != info["shape"] or str(arr.dtype) != info["dtype"]:
            return (f"{path} has shape {list(arr.shape)} {arr.dtype}, the manifest says {info['shape']} "
                    f"{info['dtype']} (foreign or truncated file)")
        if full:
            try:
                digests = _layer_digests(arr)
            except Exception as e:  # noqa: BLE001
                return f"{path} cannot be read in full ({e})"
            for layer, (got, want) in enumerate(zip(digests, info["sha256"])):
                if got != want:
                    return f"{path} layer {layer} fails its checksum (corrupted)"
    return None


@dataclass
class ShardPlan:
    index: int
    sent_start: int
    sent_end: int
    word_start: int
    word_end: int


def plan_shards(words_per_sentence: list[int], *, max_words: int) -> list[ShardPlan]:
    """Cut the corpus into consecutive sentence ranges of at most ``max_words`` words (>= 1 sentence)."""
    plans, start, wstart, acc = [], 0, 0, 0
    for i, n in enumerate(words_per_sentence):
        if acc and acc + n > max_words:
            plans.append(ShardPlan(len(plans), start, i, wstart, wstart + acc))
            start, wstart, acc = i, wstart + acc, 0
        acc += n
    if acc or not plans:
        plans.append(ShardPlan(len(plans), start, len(words_per_sentence), wstart, wstart + acc))
    return plans


class ActivationStore:
    """Read access to a finished store.

    ``store[layer]`` gives the ``[word, d_model]`` word vectors of one layer (layer 0 = embedding
    output, negative indices count from the last layer), read from the memory-mapped shards.
    ``store.sentence_vectors(pooling, layer)`` gives ``[sentence, d_model]``.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        mpath = self.path / "manifest.json"
        if not mpath.is_file():
            raise StoreError(f"{self.path} is not an activation store (no manifest.json).")
        try:
            self.manifest = json.loads(mpath.read_text())
        except json.JSONDecodeError as e:
            raise StoreError(f"{mpath} is not valid JSON ({e}); delete the folder to rebuild the store.") from None
        if not self.manifest.get("complete"):
            raise StoreError(f"{self.path} is incomplete ({len(self.manifest.get('shards', []))} of "
                             f"{self.manifest.get('n_shards')} shards); run the extraction again to resume it.")
        self._mm: dict[tuple[str, str], np.ndarray] = {}
        self.computed_shards = 0

    # ------------------------------------------------------------------ metadata
    @property
    def n_layers(self) -> int:
        """Number of hidden-state layers stored (blocks + 1, layer 0 = embeddings)."""
        return int(self.manifest["n_layers"])

    @property
    def n_words(self) -> int:
        return int(self.manifest["n_words"])

    @property
    def n_sentences(self) -> int:
        return int(self.manifest["n_sentences"])

    @property
    def hidden_size(self) -> int:
        return int(self.manifest["hidden_size"])

    @property
    def sentence_poolings(self) -> list[str]:
        return list(self.manifest.get("sentence_poolings", []))

    def nbytes(self) -> int:
        return sum(f.stat().st_size for f in self.path.rglob("*.npy"))

    def __repr__(self) -> str:
        m = self.manifest
        return (f"ActivationStore(model={m['model']['name']!r}, split={m['data']['dataset']}/{m['data']['split']}, "
                f"layers=0..{self.n_layers - 1} (0 = embeddings), words={self.n_words:,}, "
                f"sentences={self.n_sentences:,}, d_model={self.hidden_size}, pooling={m['word_pooling']}, "
                f"dtype={m['dtype']}, size={self.nbytes() / 2**20:.1f} MiB)")

    def _repr_html_(self) -> str:
        m = self.manifest
        rows = {"model": m["model"]["name"], "split": f"{m['data']['dataset']}/{m['data']['split']}",
                "layers": f"0..{self.n_layers - 1} (0 = embeddings)", "words": f"{self.n_words:,}",
                "sentences": f"{self.n_sentences:,}", "d_model": self.hidden_size, "word pooling": m["word_pooling"],
                "sentence poolings": ", ".join(self.sentence_poolings), "dtype": m["dtype"],
                "size on disk": f"{self.nbytes() / 2**20:.1f} MiB", "path": str(self.path)}
        body = "".join(f"<tr><th style='text-align:left'>{k}</th><td style='text-align:left'>{v}</td></tr>"
                       for k, v in rows.items())
        return f"<table><caption>ActivationStore</caption>{body}</table>"

    # ------------------------------------------------------------------ arrays
    def _array(self, shard: str, key: str) -> np.ndarray:
        k = (shard, key)
        if k not in self._mm:
            self._mm[k] = np.load(self.path / shard / f"{key}.npy", mmap_mode="r", allow_pickle=False)
        return self._mm[k]

    def _check_layer(self, layer: int) -> int:
        n = self.n_layers
        if not -n <= layer < n:
            raise ConfigError(f"Layer {layer} is out of range for this store: valid layers are 0..{n - 1} "
                              f"(0 = embedding output), or -{n}..-1 counting from the last.")
        return layer % n

    def __getitem__(self, layer: int) -> np.ndarray:
        return self.layer(layer)

    def __len__(self) -> int:
        return self.n_layers

    def layer(self, layer: int, *, dtype=np.float32, rows: np.ndarray | None = None) -> np.ndarray:
        """Word vectors of one layer, ``[word, d_model]`` (optionally only ``rows``, in corpus order)."""
        layer = self._check_layer(layer)
        parts = [self._array(s["name"], "words")[layer] for s in self.manifest["shards"]]
        out = np.concatenate(parts, axis=0) if len(parts) > 1 else np.asarray(parts[0])
        if rows is not None:
            out = out[rows]
        return out.astype(dtype, copy=False)

    def layers(self, layers: list[int], *, dtype=np.float32, rows: np.ndarray | None = None) -> np.ndarray:
        """``[len(layers), word, d_model]`` for a group of layers (each read once from the memmaps)."""
        return np.stack([self.layer(layer, dtype=dtype, rows=rows) for layer in layers])

    def sentence_vectors(self, pooling: str, layer: int, *, dtype=np.float32) -> np.ndarray:
        """Sentence vectors ``[sentence, d_model]`` for one pooling (``cls``, ``mean``, ``last``) and layer."""
        if pooling not in self.sentence_poolings:
            from probekit.errors import unknown_name
            raise unknown_name("sentence pooling", pooling, self.sentence_poolings, ConfigError,
                               hint=f"(this store, for a {self.manifest['model'].get('kind', '?')} model, has these)")
        layer = self._check_layer(layer)
        parts = [self._array(s["name"], f"sent-{pooling}")[layer] for s in self.manifest["shards"]]
        return np.concatenate(parts, axis=0).astype(dtype, copy=False)

    def iter_shards(self) -> Iterator[dict]:
        yield from self.manifest["shards"]
