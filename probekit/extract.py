"""Batched extraction of every layer in one forward pass, streamed shard by shard into the store.

* One forward pass with ``output_hidden_states=True`` yields all layers (layer 0 = embeddings).
* Sentences are tokenized once as natural text (:mod:`probekit.align`); long sentences are cut
  into overlapping windows (never truncated).
* Within a shard, windows are sorted by subword length and packed into batches under a token
  budget, so almost no compute goes to padding.
* Each finished shard is committed atomically (:func:`probekit.store.write_shard`); memory use is
  bounded by one shard, whatever the corpus size.
* With CUDA, the forward pass runs under bf16 (or fp16) autocast; vectors are stored as float16.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from probekit.align import (SENTENCE_POOLINGS, align_batch, check_pooling, plan_windows, pool_words,
                            special_layout)
from probekit.data.conllu_io import Sentence, atomic_write_bytes
from probekit.errors import ModelError, StoreError
from probekit.store import (DTYPES, ActivationStore, plan_shards, read_json, store_key, verify_shard,
                            write_shard)

log = logging.getLogger(__name__)

ALIGN_VERSION = 1


def default_store_root() -> Path:
    from probekit.data.datasets import cache_root

    return Path(os.environ.get("PROBEKIT_STORE_DIR") or cache_root() / "stores")


def corpus_checksum(sentences: Sequence[Sentence]) -> str:
    """sha256 over the text and words of the sentences (identifies the data inside the store key)."""
    import hashlib

    h = hashlib.sha256()
    for s in sentences:
        h.update(s.text.encode())
        h.update(b"\x00")
        h.update("\x1f".join(s.words).encode())
        h.update(b"\x1e")
    return h.hexdigest()


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="word", unit_scale=True, disable=not enabled, leave=False)


def _autocast(device: str, amp: str | None):
    import torch

    if device.startswith("cuda") and amp != "none":
        dt = torch.bfloat16 if (amp in (None, "bf16") and torch.cuda.is_bf16_supported()) else torch.float16
        return torch.autocast("cuda", dtype=dt)
    return contextlib.nullcontext()


class Extractor:
    """Runs a frozen :class:`~probekit.models.LoadedModel` over sentences, all layers at once."""

    def __init__(self, model, *, word_pooling: str | None = None, prepend_bos: bool | None = None,
                 batch_tokens: int | None = None, max_length: int | None = None, amp: str | None = None):
        self.lm = model
        self.word_pooling = check_pooling(word_pooling or model.default_word_pooling)
        # Decoders get a BOS first by default so that no word sits at position 0 (the attention sink).
        self.prepend_bos = (model.kind == "decoder") if prepend_bos is None else prepend_bos
        self.prefix, self.suffix = special_layout(model.tokenizer, prepend_bos=self.prepend_bos)
        self.max_length = min(max_length or model.max_length, model.max_length)
        self.max_content = self.max_length - len(self.prefix) - len(self.suffix)
        dev = str(next(model.model.parameters()).device)
        self.device = dev
        self.batch_tokens = batch_tokens or (16384 if dev.startswith("cuda") else 4096)
        self.amp = amp
        self.causal = model.kind == "decoder"
        self.sentence_poolings = [p for p in SENTENCE_POOLINGS if p != "cls" or (self.prefix and not self.causal)]
        self.pad_id = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0
        self.stats = {"tokens": 0, "padded_tokens": 0, "forward_seconds": 0.0, "windowed_sentences": 0,
                      "repaired_words": 0, "borrowed_words": 0}

    def settings(self) -> dict:
        """Everything about extraction that changes the stored vectors (goes into the store key)."""
        return {"word_pooling": self.word_pooling, "prepend_bos": self.prepend_bos, "prefix": self.prefix,
                "suffix": self.suffix, "max_length": self.max_length, "align_version": ALIGN_VERSION,
                "sentence_poolings": self.sentence_poolings,
                "amp": None if not self.device.startswith("cuda") else (self.amp or "bf16")}

    # -------------------------------------------------------------------------------- core
    def encode_shard(self, sentences: Sequence[Sentence]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Vectors of a group of sentences.

        Returns:
            words: ``[layer, word, d_model]`` float32 (word order = corpus order).
            sents: pooling -> ``[layer, sentence, d_model]`` float32.
        """
        import torch

        aligned = align_batch(self.lm.tokenizer, sentences)
        n_layers = self.lm.num_layers + 1
        d = self.lm.hidden_size
        pieces = []  # (length, sentence index, window start, window end)
        owners = []
        token_bufs = []
        for si, a in enumerate(aligned):
            windows, owner = plan_windows(max(a.n_tokens, 1), self.max_content, causal=self.causal)
            if len(windows) > 1:
                self.stats["windowed_sentences"] += 1
            self.stats["repaired_words"] += a.repaired
            self.stats["borrowed_words"] += a.borrowed
            owners.append(owner)
            token_bufs.append(np.zeros((n_layers, max(a.n_tokens, 1), d), dtype=np.float32))
            for wi, (s, e) in enumerate(windows):
                pieces.append((len(self.prefix) + (e - s) + len(self.suffix), si, wi, s, e))
        cls_vecs = np.zeros((n_layers, len(sentences), d), dtype=np.float32)
        pieces.sort(key=lambda p: (p[0], p[1], p[2]))  # stable, deterministic batch composition
        model = self.lm.model
        i = 0
        with torch.inference_mode(), _autocast(self.device, self.amp):
            while i < len(pieces):
                longest = pieces[i][0]
                j = i + 1
                # grow the batch while it fits the token budget and padding stays under ~12%
                while (j < len(pieces) and pieces[j][0] * (j - i + 1) <= self.batch_tokens
                       and pieces[j][0] * (j - i + 1) <= 1.12 * (sum(q[0] for q in pieces[i:j + 1]))):
                    j += 1
                batch = pieces[i:j]
                longest = batch[-1][0]
                ids = np.full((len(batch), longest), self.pad_id, dtype=np.int64)
                mask = np.zeros((len(batch), longest), dtype=np.int64)
                for b, (ln, si, wi, s, e) in enumerate(batch):
                    seq = self.prefix + aligned[si].token_ids[s:e] + self.suffix
                    ids[b, :ln] = seq
                    mask[b, :ln] = 1
                t0 = time.perf_counter()
                try:
                    out = model(input_ids=torch.from_numpy(ids).to(self.device),
                                attention_mask=torch.from_numpy(mask).to(self.device), output_hidden_states=True)
                except RuntimeError as e:
                    if "out of memory" in str(e).lower() or "can't allocate" in str(e).lower():
                        raise ModelError(f"Out of memory running {self.lm.name} on a batch of {len(batch)} x "
                                         f"{longest} tokens. Lower batch_tokens (now {self.batch_tokens}, e.g. "
                                         f"--batch-tokens {max(256, self.batch_tokens // 4)}), or use a smaller "
                                         "model or dtype.") from None
                    raise
                hs = torch.stack([h.float() for h in out.hidden_states]).cpu().numpy()  # [layer, batch, seq, d]
                self.stats["forward_seconds"] += time.perf_counter() - t0
                self.stats["tokens"] += int(mask.sum())
                self.stats["padded_tokens"] += ids.size
                p = len(self.prefix)
                for b, (ln, si, wi, s, e) in enumerate(batch):
                    own = owners[si][s:e] == wi
                    if aligned[si].n_tokens:
                        token_bufs[si][:, s:e][:, own] = hs[:, b, p:p + (e - s)][:, own]
                    if wi == 0 and p:
                        cls_vecs[:, si] = hs[:, b, 0]
                i = j
        n_words = sum(len(s) for s in sentences)
        words = np.empty((n_layers, n_words, d), dtype=np.float32)
        sents = {k: np.empty((n_layers, len(sentences), d), dtype=np.float32) for k in self.sentence_poolings}
        off = 0
        for si, (a, buf) in enumerate(zip(aligned, token_bufs)):
            n = len(a.word_tokens)
            words[:, off:off + n] = pool_words(buf, a.word_tokens, self.word_pooling)
            off += n
            if "mean" in sents:
                sents["mean"][:, si] = buf.mean(axis=1)
            if "last" in sents:
                sents["last"][:, si] = buf[:, -1]
            if "cls" in sents:
                sents["cls"][:, si] = cls_vecs[:, si]
        return words, sents


def extract(model, sentences: Sequence[Sentence], *, dataset: str = "custom", split: str = "custom",
            data_checksum: str | None = None, store_root: str | os.PathLike | None = None,
            word_pooling: str | None = None, dtype: str = "float16", prepend_bos: bool | None = None,
            batch_tokens: int | None = None, shard_words: int | None = None, strict: bool = False,
            progress: bool = True, max_length: int | None = None, _stop_after_shards: int | None = None
            ) -> ActivationStore:
    """Extract (or reuse) the activation store of ``sentences`` for ``model``.

    Running again with the same inputs reuses the finished store and does no forward pass; an
    interrupted store resumes from its last committed shard.

    Args:
        model: a :class:`~probekit.models.LoadedModel`.
        sentences: the split's sentences, in order.
        dataset, split: names recorded in the manifest.
        data_checksum: identifies the data (default: computed from the sentences' text and words).
        store_root: folder holding stores (default ``$PROBEKIT_STORE_DIR`` or the user cache).
        word_pooling: ``first`` / ``last`` / ``mean`` (default first for encoders, last for decoders).
        dtype: ``float16`` (default) or ``float32`` on disk.
        strict: a corrupt or foreign shard stops the run (StoreError) instead of being recomputed.
    """
    from filelock import FileLock, Timeout

    if not sentences:
        raise StoreError(f"No sentences to extract for {dataset}/{split}: the split is empty.")
    if dtype not in DTYPES:
        from probekit.errors import unknown_name
        raise unknown_name("store dtype", dtype, DTYPES)
    ex = Extractor(model, word_pooling=word_pooling, prepend_bos=prepend_bos, batch_tokens=batch_tokens,
                   max_length=max_length)
    data_checksum = data_checksum or corpus_checksum(sentences)
    spec = {"model": model.identity, "data": {"dataset": dataset, "split": split, "checksum": data_checksum,
                                              "n_sentences": len(sentences)},
            "extraction": ex.settings(), "dtype": dtype}
    key = store_key(spec)
    root = Path(store_root) if store_root else default_store_root()
    store_dir = root / f"{Path(model.name).name.replace('@', '_')}-{split}-{key}"
    store_dir.mkdir(parents=True, exist_ok=True)
    words_per = [len(s) for s in sentences]
    n_layers, d = model.num_layers + 1, model.hidden_size
    if shard_words is None:
        # about 64 MiB of float16 word vectors per shard
        shard_words = max(256, (64 << 20) // (2 * n_layers * d))
    plans = plan_shards(words_per, max_words=shard_words)
    lock = FileLock(str(store_dir / ".lock"))
    try:
        lock.acquire(timeout=int(os.environ.get("PROBEKIT_LOCK_TIMEOUT", "3600")))
    except Timeout:
        raise StoreError(f"{store_dir} is locked by another probekit process (lock file {store_dir / '.lock'}). "
                         "Wait for it to finish; if no other process runs, delete the lock file.") from None
    try:
        manifest_path = store_dir / "manifest.json"
        manifest = {"format": 2, "key": key, **spec, "word_pooling": ex.word_pooling,
                    "sentence_poolings": ex.sentence_poolings, "n_layers": n_layers, "hidden_size": d,
                    "n_sentences": len(sentences), "n_words": sum(words_per), "n_shards": len(plans),
                    "shard_words": shard_words, "shards": [], "complete": False}
        done: dict[int, dict] = {}
        expected = {"words.npy", *(f"sent-{k}.npy" for k in ex.sentence_poolings)}
        if manifest_path.is_file():
            old = read_json(manifest_path)  # None when unreadable, not UTF-8, not JSON or not an object
            if old is None:
                if strict:
                    raise StoreError(f"Activation store damaged: {manifest_path} is not a JSON object. Delete "
                                     f"{store_dir} or rerun without --strict to rebuild the manifest.")
                log.warning("Activation store damaged: %s is not a JSON object; rebuilding the manifest from the "
                            "shard folders (each shard is verified against its meta.json).", manifest_path)
            elif old.get("key") == key and old.get("n_shards") == len(plans):
                for rec in old.get("shards") or []:
                    try:
                        done[int(rec["name"].split("-")[1])] = rec
                    except (TypeError, KeyError, IndexError, ValueError, AttributeError):
                        continue  # a malformed record: the shard folder's own meta.json is read below
                manifest["stats"] = old.get("stats", {})
        # pick up shards committed after the last manifest write (killed between rename and manifest)
        for p in plans:
            meta_file = store_dir / f"shard-{p.index:05d}" / "meta.json"
            if p.index not in done and meta_file.is_file():
                meta = read_json(meta_file)
                if meta is not None:
                    done[p.index] = meta
                else:
                    log.warning("Activation store damaged: %s is not a JSON object. Recomputing that shard.",
                                meta_file)
        for idx in sorted(done):
            meta = done[idx]
            p = plans[idx] if idx < len(plans) else None
            problem = verify_shard(store_dir, meta, expected=expected, key=key)
            if not problem and (p is None or [meta.get(k) for k in ("sent_start", "sent_end", "word_start", "word_end")]
                                != [p.sent_start, p.sent_end, p.word_start, p.word_end]):
                problem = f"{store_dir / meta['name']} covers other sentences than planned (foreign shard)"
            if problem:
                if strict:
                    raise StoreError(f"Activation store damaged: {problem}. Delete {store_dir} or rerun without "
                                     "--strict to recompute the shard.")
                log.warning("Activation store damaged: %s. Recomputing that shard.", problem)
                del done[idx]
        todo = [p for p in plans if p.index not in done]
        # leftovers of a killed run: a half-written shard folder, a half-written manifest
        for tmp in store_dir.glob(".tmp-shard-*"):
            shutil_rmtree(tmp)
        for tmp in store_dir.glob(".manifest.json.*.tmp"):
            tmp.unlink(missing_ok=True)
        if todo:
            total_words = sum(p.word_end - p.word_start for p in todo)
            log.info("Extracting %s/%s with %s: %d of %d shards to do (%d words)", dataset, split, model.name,
                     len(todo), len(plans), total_words)
            bar = _progress(total_words, f"extract {Path(model.name).name} {split}", progress)
            np_dtype = DTYPES[dtype]
            for n_done, p in enumerate(todo):
                if _stop_after_shards is not None and n_done >= _stop_after_shards:
                    break
                words, sents = ex.encode_shard(sentences[p.sent_start:p.sent_end])
                arrays = {"words": words.astype(np_dtype)}
                arrays.update({f"sent-{k}": v.astype(np_dtype) for k, v in sents.items()})
                meta = write_shard(store_dir, p.index, arrays, {"sent_start": p.sent_start, "sent_end": p.sent_end,
                                                                "word_start": p.word_start, "word_end": p.word_end},
                                   key=key)
                done[p.index] = meta
                manifest["shards"] = [done[k] for k in sorted(done)]
                manifest["stats"] = {k: manifest.get("stats", {}).get(k, 0) + v for k, v in ex.stats.items()}
                ex.stats = {k: 0 for k in ex.stats}
                atomic_write_bytes(manifest_path, json.dumps(manifest, indent=1).encode())
                del words, sents, arrays
                _release_freed_memory()
                bar.update(p.word_end - p.word_start)
            bar.close()
        manifest["shards"] = [done[k] for k in sorted(done)]
        manifest["complete"] = len(done) == len(plans)
        atomic_write_bytes(manifest_path, json.dumps(manifest, indent=1).encode())
    finally:
        lock.release()
    if not manifest["complete"]:
        raise StoreError(f"Extraction of {store_dir} stopped after {len(done)} of {len(plans)} shards; "
                         "run it again to resume.")
    store = ActivationStore(store_dir)
    store.computed_shards = len(todo)  # shards computed by this call (0 = pure reuse, no forward pass)
    return store


def _release_freed_memory() -> None:
    """Hand the shard's freed buffers back to the OS (glibc ``malloc_trim``), so that peak memory does not creep up
    with the number of shards through heap fragmentation (measured: the retained heap grew by ~300 MB over the 8
    shards of half of EWT train without it). A no-op where glibc is not there."""
    global _MALLOC_TRIM
    if _MALLOC_TRIM is None:
        try:
            import ctypes

            _MALLOC_TRIM = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _MALLOC_TRIM = False
    if _MALLOC_TRIM:
        _MALLOC_TRIM(0)


_MALLOC_TRIM = None


def shutil_rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
