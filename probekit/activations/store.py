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

:class:`ActivationStore` checks again when it reads: an array whose shape, dtype or per-layer
checksum differs from the manifest (a file damaged or swapped after extraction) raises
:class:`~probekit.errors.StoreError` naming the file; it never returns wrong vectors.
"""
from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from probekit._io import atomic_write_bytes, disk_full_error
from probekit.errors import ConfigError, StoreError, unknown_name
from probekit.keys import content_key

log = logging.getLogger(__name__)

STORE_FORMAT = 2
#: store dtype -> dtype of its .npy files. numpy has no bfloat16: a bfloat16 store keeps each value's 16 bits as uint16
#: (:func:`to_disk` rounds to nearest even, :func:`from_disk` widens exactly), read back as float32.
DTYPES = {"float16": np.float16, "float32": np.float32, "bfloat16": np.uint16}


def to_disk(arr: np.ndarray, dtype: str) -> np.ndarray:
    """``arr`` (float) as the store ``dtype`` writes it."""
    if dtype != "bfloat16":
        return arr.astype(DTYPES[dtype], copy=False)
    import torch

    t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)).to(torch.bfloat16)
    return t.view(torch.int16).numpy().view(np.uint16)


def from_disk(arr: np.ndarray, dtype: str) -> np.ndarray:
    """The float values of an array read from a store of ``dtype`` (bfloat16 bits widened to float32)."""
    if dtype != "bfloat16":
        return arr
    return (np.asarray(arr, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def store_key(spec: dict) -> str:
    """Content key of a store: everything that determines its arrays, with the store format (see probekit.keys)."""
    return content_key("store", {"format": STORE_FORMAT, **spec})


def read_json(path: Path) -> dict | None:
    """A JSON object read from ``path``, or None when the file is missing, unreadable, not UTF-8,
    not JSON or not an object (a damaged manifest or shard meta is rebuilt, never trusted)."""
    try:
        obj = json.loads(Path(path).read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


#: Threads that hash and write a shard's files. hashlib and file writes release the GIL, and nothing else runs while
#: a shard is committed or verified, so the CPUs the process may use share the work (docs/design.md 23).
IO_THREADS = max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


def _sha256(arr: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(arr).data).hexdigest()


def _hash_layers(pool: ThreadPoolExecutor, arr: np.ndarray) -> list["Future[str]"]:
    """sha256 of each layer's bytes of a ``[layer, n, d]`` array (a memmap is read once), one job per layer on
    ``pool``: what the manifest records and :func:`verify_shard` compares."""
    return [pool.submit(_sha256, arr[i]) for i in range(arr.shape[0])]


def _layer_digests(arr: np.ndarray) -> list[str]:
    """:func:`_hash_layers` on a pool of its own, as strings."""
    with ThreadPoolExecutor(IO_THREADS) as pool:
        return [f.result() for f in _hash_layers(pool, arr)]


def _save_synced(path: Path, arr: np.ndarray) -> None:
    with open(path, "wb") as fh:
        np.save(fh, arr, allow_pickle=False)
        fh.flush()
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    dfd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def write_shard(store_dir: Path, index: int, arrays: dict[str, np.ndarray], meta: dict, *,
                key: str | None = None) -> dict:
    """Commit one shard atomically: write a temporary folder, fsync its files, rename it into place.

    Args:
        store_dir: the store folder.
        index: shard number (the folder is ``shard-{index:05d}``).
        arrays: file stem -> ``[layer, item, d_model]`` array (``words``, ``sent-mean``...).
        meta: extra fields recorded in ``meta.json`` (sentence and word ranges).
        key: the store's content key, recorded so that a shard copied from another store is recognised.

    Returns the shard's meta (with per-layer checksums) as recorded in the manifest.
    """
    name = f"shard-{index:05d}"
    final = store_dir / name
    tmp = store_dir / f".tmp-{name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    with ThreadPoolExecutor(IO_THREADS) as pool:  # every file written and every layer hashed side by side
        written = [pool.submit(_save_synced, tmp / f"{stem}.npy", arr) for stem, arr in arrays.items()]
        digests = {stem: _hash_layers(pool, arr) for stem, arr in arrays.items()}
        failed = next((f.exception() for f in written if f.exception() is not None), None)
    if failed is not None:  # after the pool is done, so that no write is still going into tmp
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(failed, OSError) and failed.errno in (errno.ENOSPC, errno.EDQUOT):
            raise disk_full_error(final, sum(a.nbytes for a in arrays.values()), failed) from None
        raise failed
    files = {f"{stem}.npy": {"shape": list(arr.shape), "dtype": str(arr.dtype),
                             "sha256": [f.result() for f in digests[stem]]} for stem, arr in arrays.items()}
    meta = {**meta, "name": name, "files": files}
    if key is not None:
        meta["key"] = key
    atomic_write_bytes(tmp / "meta.json", json.dumps(meta, indent=1).encode())
    _fsync_dir(tmp)
    if final.exists():  # a stale or bad copy (we hold the lock): replace it
        shutil.rmtree(final)
    os.rename(tmp, final)
    _fsync_dir(store_dir)  # make the rename durable before the manifest names the shard
    return meta


def _meta_problem(store_dir: Path, meta, expected: Iterable[str] | None, key: str | None) -> str | None:
    """What is wrong with a shard's meta record itself (before its files are looked at), or None."""
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str) or not isinstance(meta.get("files"), dict):
        where = store_dir / meta["name"] / "meta.json" if isinstance(meta, dict) and isinstance(
            meta.get("name"), str) else store_dir / "manifest.json"
        return f"{where} has a malformed shard record (no name or file list)"
    d = store_dir / meta["name"]
    for fname, info in meta["files"].items():
        if not (isinstance(info, dict) and isinstance(info.get("shape"), list) and isinstance(info.get("sha256"), list)
                and info["shape"] and len(info["sha256"]) == info["shape"][0]):
            return f"{d / 'meta.json'} has a malformed record for {fname}"
    if expected is not None:
        missing = sorted(set(expected) - set(meta["files"]))
        if missing:
            return f"{d} lacks {', '.join(missing)} (made with other settings, or foreign)"
    if key is not None and meta.get("key", key) != key:
        return f"{d} belongs to another store (key {meta.get('key')}, expected {key}; foreign shard)"
    return None


def verify_shard(store_dir: Path, meta: dict, *, full: bool = True, expected: Iterable[str] | None = None,
                 key: str | None = None) -> str | None:
    """Return None when a committed shard is intact, else a sentence saying what is wrong (naming the file).

    Args:
        store_dir: the store folder.
        meta: the shard's record (from the manifest, or its own ``meta.json``).
        full: also compare every layer's sha256 (else only readability, shape and dtype).
        expected: file names the shard must have (e.g. ``words.npy``); None = whatever meta lists.
        key: the store key; a shard recorded with another key is foreign.
    """
    problem = _meta_problem(store_dir, meta, expected, key)
    if problem:
        return problem
    d = store_dir / meta["name"]
    for fname, info in meta["files"].items():
        path = d / fname
        if not path.is_file():
            return f"{path} is missing"
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except Exception as e:  # noqa: BLE001 - truncated or foreign files fail in many ways
            return f"{path} is unreadable ({type(e).__name__}: {e})"
        if list(arr.shape) != info["shape"] or str(arr.dtype) != info.get("dtype"):
            return (f"{path} has shape {list(arr.shape)} {arr.dtype}, the manifest says {info['shape']} "
                    f"{info.get('dtype')} (foreign or truncated file)")
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
    plans: list[ShardPlan] = []
    start, wstart, acc = 0, 0, 0
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

    def __init__(self, path: str | os.PathLike, *, verify: bool = True):
        """Open a finished store.

        Args:
            path: the store folder (holding ``manifest.json``).
            verify: check every array's shape and dtype, and every layer's sha256, against the
                manifest the first time it is read (a damaged or swapped file raises StoreError
                instead of giving wrong vectors). Each (shard, array, layer) is hashed once.
        """
        self.path = Path(path)
        mpath = self.path / "manifest.json"
        if not mpath.is_file():
            raise StoreError(f"{self.path} is not an activation store (no manifest.json).")
        manifest = read_json(mpath)
        if manifest is None:
            raise StoreError(f"{mpath} is damaged (not a JSON object); run the extraction again to rebuild it "
                             "(finished shards are verified and kept), or delete the folder.")
        self.manifest = manifest
        if not self.manifest.get("complete"):
            raise StoreError(f"{self.path} is incomplete ({len(self.manifest.get('shards', []))} of "
                             f"{self.manifest.get('n_shards')} shards); run the extraction again to resume it.")
        problem = self._manifest_problem()
        if problem:
            raise StoreError(f"{mpath} is inconsistent ({problem}); run the extraction again to rebuild it, or "
                             "delete the folder.")
        self.verify = verify
        self._mm: dict[tuple[str, str], np.ndarray] = {}
        self._verified: set[tuple[str, str, int]] = set()
        self.computed_shards = 0

    def _manifest_problem(self) -> str | None:
        """What makes the manifest unusable (missing keys, shards not covering the corpus), or None."""
        m = self.manifest
        for k in ("n_layers", "n_words", "n_sentences", "hidden_size", "shards", "model", "data", "word_pooling",
                  "dtype"):
            if k not in m:
                return f"no {k!r}"
        word = sent = 0
        for sh in m["shards"]:
            if not isinstance(sh, dict) or not isinstance(sh.get("files"), dict) or "words.npy" not in sh["files"]:
                return "a shard record without its file list"
            if (sh.get("word_start"), sh.get("sent_start")) != (word, sent):
                return f"{sh.get('name')} starts at word {sh.get('word_start')}, expected {word}"
            word, sent = sh.get("word_end", -1), sh.get("sent_end", -1)
        if (word, sent) != (m["n_words"], m["n_sentences"]):
            return (f"the shards cover {word} words / {sent} sentences, the store has {m['n_words']} / "
                    f"{m['n_sentences']}")
        return None

    # ------------------------------------------------------------------ metadata
    @property
    def n_layers(self) -> int:
        """Number of hidden-state layers of the model (blocks + 1, layer 0 = embeddings); the store may hold only
        some of them (:attr:`layer_ids`)."""
        return int(self.manifest["n_layers"])

    @property
    def layer_ids(self) -> list[int]:
        """The layers this store holds, in order (all ``0..n_layers-1`` unless ``layers`` or a sub-layer site chose
        fewer); ``store.layer(k)`` takes these numbers."""
        ids = self.manifest.get("layers")
        return list(range(self.n_layers)) if ids is None else [int(x) for x in ids]

    @property
    def site(self) -> str:
        """Where in the model the vectors were read (:mod:`probekit.activations.sites`)."""
        return str(self.manifest.get("site", "resid_post"))

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
                f"site={self.site}, layers={self._layers_text()}, words={self.n_words:,}, "
                f"sentences={self.n_sentences:,}, d_model={self.hidden_size}, pooling={m['word_pooling']}, "
                f"dtype={m['dtype']}, size={self.nbytes() / 2**20:.1f} MiB)")

    def _layers_text(self) -> str:
        ids = self.layer_ids
        if ids == list(range(ids[0], ids[-1] + 1)):
            return f"{ids[0]}..{ids[-1]} (0 = embeddings)"
        return f"{ids} (0 = embeddings)"

    def _repr_html_(self) -> str:
        m = self.manifest
        rows = {"model": m["model"]["name"], "split": f"{m['data']['dataset']}/{m['data']['split']}",
                "site": self.site, "layers": self._layers_text(), "words": f"{self.n_words:,}",
                "sentences": f"{self.n_sentences:,}", "d_model": self.hidden_size, "word pooling": m["word_pooling"],
                "sentence poolings": ", ".join(self.sentence_poolings), "dtype": m["dtype"],
                "size on disk": f"{self.nbytes() / 2**20:.1f} MiB", "path": str(self.path)}
        body = "".join(f"<tr><th style='text-align:left'>{k}</th><td style='text-align:left'>{v}</td></tr>"
                       for k, v in rows.items())
        return f"<table><caption>ActivationStore</caption>{body}</table>"

    # ------------------------------------------------------------------ arrays
    def _array(self, shard: dict, key: str) -> np.ndarray:
        """The memory-mapped ``[layer, item, d_model]`` array ``key`` of one shard, shape-checked."""
        k = (shard["name"], key)
        if k not in self._mm:
            path = self.path / shard["name"] / f"{key}.npy"
            info = shard["files"].get(f"{key}.npy")
            if info is None:
                raise StoreError(f"{path} is not listed in {self.path / 'manifest.json'}; run the extraction again.")
            try:
                arr = np.load(path, mmap_mode="r", allow_pickle=False)
            except Exception as e:  # noqa: BLE001 - missing, truncated or foreign files fail in many ways
                raise self._damaged(path, f"unreadable ({type(e).__name__}: {e})") from None
            if list(arr.shape) != list(info["shape"]) or str(arr.dtype) != info["dtype"]:
                raise self._damaged(path, f"shape {list(arr.shape)} {arr.dtype}, the manifest says {info['shape']} "
                                          f"{info['dtype']} (foreign or truncated file)")
            self._mm[k] = arr
        return self._mm[k]

    def _damaged(self, path: Path, what: str) -> StoreError:
        return StoreError(f"Activation store damaged: {path} is {what}. Run the extraction again (without --strict "
                          f"it recomputes the bad shard), or delete {self.path}.")

    def _part(self, shard: dict, key: str, layer: int) -> np.ndarray:
        """One shard's ``[item, d_model]`` slice at array index ``layer`` (:meth:`_index`), checked against its sha256 on first read."""
        arr = self._array(shard, key)
        part = arr[layer]
        if self.verify and (shard["name"], key, layer) not in self._verified:
            part = np.ascontiguousarray(part)
            want = shard["files"][f"{key}.npy"]["sha256"][layer]
            if hashlib.sha256(part.data).hexdigest() != want:
                raise self._damaged(self.path / shard["name"] / f"{key}.npy",
                                    f"corrupted (layer {layer} fails its checksum)")
            self._verified.add((shard["name"], key, layer))
        return part

    def verify_all(self) -> None:
        """Check every array of every shard now (shape, dtype, per-layer sha256); raise StoreError if damaged."""
        for sh in self.manifest["shards"]:
            problem = verify_shard(self.path, sh)
            if problem:
                raise StoreError(f"Activation store damaged: {problem}. Run the extraction again, or delete "
                                 f"{self.path}.")

    def _check_layer(self, layer: int) -> int:
        """The layer number in ``0..n_layers-1`` (negative counts from the last); ConfigError when out of range or
        not held by this store."""
        n = self.n_layers
        if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)):
            raise ConfigError(f"Layer {layer!r} is not an integer: valid layers are 0..{n - 1} (0 = embedding "
                              f"output), or -{n}..-1 counting from the last.")
        if not -n <= layer < n:
            raise ConfigError(f"Layer {layer} is out of range for this store: valid layers are 0..{n - 1} "
                              f"(0 = embedding output), or -{n}..-1 counting from the last.")
        layer = int(layer) % n
        if layer not in self.layer_ids:
            raise ConfigError(f"Layer {layer} is not in this store (site {self.site}, layers {self.layer_ids}): "
                              "add it to the config's 'layers' and extract again.")
        return layer

    def _index(self, layer: int) -> int:
        """Position in the arrays of a layer number checked by :meth:`_check_layer`."""
        return self.layer_ids.index(layer)

    def __getitem__(self, layer: int) -> np.ndarray:
        return self.layer(layer)

    def __len__(self) -> int:
        return self.n_layers

    def layer(self, layer: int, *, dtype=np.float32, rows: np.ndarray | None = None) -> np.ndarray:
        """Word vectors of one layer, ``[word, d_model]`` (optionally only ``rows``, in corpus order)."""
        index = self._index(self._check_layer(layer))
        parts = [self._part(s, "words", index) for s in self.manifest["shards"]]
        out = np.concatenate(parts, axis=0) if len(parts) > 1 else np.asarray(parts[0])
        if rows is not None:
            out = out[rows]
        elif len(parts) == 1:
            # a copy, not a read-only view of the file: writable in every case
            return np.array(from_disk(out, self.manifest["dtype"]), dtype=dtype)
        return from_disk(out, self.manifest["dtype"]).astype(dtype, copy=False)

    def layers(self, layers: list[int], *, dtype=np.float32, rows: np.ndarray | None = None) -> np.ndarray:
        """``[len(layers), word, d_model]`` for a group of layers (each read once from the memmaps)."""
        return np.stack([self.layer(layer, dtype=dtype, rows=rows) for layer in layers])

    def sentence_vectors(self, pooling: str, layer: int, *, dtype=np.float32) -> np.ndarray:
        """Sentence vectors ``[sentence, d_model]`` for one pooling (``cls``, ``mean``, ``last``) and layer."""
        if pooling not in self.sentence_poolings:
            raise unknown_name("sentence pooling", pooling, self.sentence_poolings, ConfigError,
                               hint=f"(this store, for a {self.manifest['model'].get('kind', '?')} model, has these)")
        index = self._index(self._check_layer(layer))
        parts = [self._part(s, f"sent-{pooling}", index) for s in self.manifest["shards"]]
        return from_disk(np.concatenate(parts, axis=0), self.manifest["dtype"]).astype(dtype, copy=False)

    def iter_shards(self) -> Iterator[dict]:
        yield from self.manifest["shards"]
