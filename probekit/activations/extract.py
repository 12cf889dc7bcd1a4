"""Batched extraction of every layer in one forward pass, streamed shard by shard into the store.

* One forward pass with ``output_hidden_states=True`` yields all layers (layer 0 = embeddings).
* Sentences are tokenized once as natural text (:mod:`probekit.activations.align`); long sentences are cut
  into overlapping windows (never truncated).
* Within a shard, windows are sorted by subword length and packed into batches under a token
  budget, each batch padded by at most :data:`MAX_PADDING` of its tokens (:mod:`probekit.activations.batching`).
* Each finished shard is committed atomically (:func:`probekit.activations.store.write_shard`); memory use is
  bounded by one shard, whatever the corpus size.
* The forward pass runs in fp32, or under bf16/fp16 autocast when asked (``precision``; ``auto`` is fp32, see
  :data:`AUTO_BF16`); the precision that runs is part of the store key. Vectors are stored as float16 by default.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np

from probekit._io import acquire_lock, cache_root, check_name
from probekit._progress import progress_bar
from probekit.activations.align import (
    SENTENCE_POOLINGS,
    align_batch,
    check_pooling,
    plan_windows,
    pool_words,
    special_layout,
)
from probekit.activations.batching import Packing, make_batches, negotiate_packing
from probekit.activations.heap import kept_heap, paused_gc, trim_if_over
from probekit.activations.precision import emulation_warning, forward_context, resolve_precision
from probekit.activations.sites import check_sites, record_sites, site_layers, site_width
from probekit.activations.store import (
    DTYPES,
    ActivationStore,
    plan_shards,
    store_key,
    to_disk,
)
from probekit.activations.writer import StorePlan, StoreWriter
from probekit.data.conllu_io import Sentence
from probekit.errors import ConfigError, DataError, ModelError, StoreError, unknown_name

log = logging.getLogger(__name__)

#: Part of every store key: bumped when alignment or word pooling changes what a store holds (2: a subword goes to the
#: word it overlaps most, and `first` reads the first subword carrying a letter or digit, see align.py).
ALIGN_VERSION = 2
#: Most padding a batch may carry, as a share of its real tokens. At 3%, 1,000 EWT train sentences carry 0.9% padding
#: in 48 batches (12%: 8.2% in 18). A row's vectors depend on its batch's shape in the last bits: docs/design.md 19.
MAX_PADDING = 0.03


def default_store_root() -> Path:
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




class Extractor:
    """Runs a frozen :class:`~probekit.activations.models.LoadedModel` over sentences, all layers at once."""

    def __init__(self, model, *, word_pooling: str | None = None, prepend_bos: bool | None = None,
                 batch_tokens: int | None = None, max_length: int | None = None, precision: str | None = "auto",
                 packing: bool = True):
        self.lm = model
        self.word_pooling = check_pooling(word_pooling or model.default_word_pooling)
        # Decoders get a BOS first by default so that no word sits at position 0 (the attention sink).
        self.prepend_bos = (model.kind == "decoder") if prepend_bos is None else prepend_bos
        self.prefix, self.suffix = special_layout(model.tokenizer, prepend_bos=self.prepend_bos)
        self.max_length = model.max_length if max_length is None else min(max_length, model.max_length)
        self.max_content = self.max_length - len(self.prefix) - len(self.suffix)
        if self.max_content < 2:
            raise ConfigError(f"max_length {max_length} leaves {self.max_content} subword(s) for the words after "
                              f"{len(self.prefix) + len(self.suffix)} special token(s); give at least "
                              f"{len(self.prefix) + len(self.suffix) + 2} (default: the model's {model.max_length}).")

        dev = str(next(model.model.parameters()).device)
        self.device = dev
        self.batch_tokens = batch_tokens or (16384 if dev.startswith("cuda") else 4096)
        self.precision = resolve_precision(dev, precision)  # what runs, and what the store key records
        if (slow := emulation_warning(dev, self.precision)) is not None:
            log.warning(slow)
        self.max_padding = MAX_PADDING
        self.causal = model.kind == "decoder"
        self.sentence_poolings = [p for p in SENTENCE_POOLINGS if p != "cls" or (self.prefix and not self.causal)]
        self.pad_id = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0
        self._may_pack = packing
        self.stats = {"tokens": 0, "padded_tokens": 0, "forward_seconds": 0.0, "windowed_sentences": 0,
                      "repaired_words": 0, "borrowed_words": 0}

    def settings(self) -> dict:
        """Everything about extraction that changes the stored vectors (goes into the store key)."""
        return {"word_pooling": self.word_pooling, "prepend_bos": self.prepend_bos, "prefix": self.prefix,
                "suffix": self.suffix, "max_length": self.max_length, "align_version": ALIGN_VERSION,
                "sentence_poolings": self.sentence_poolings,
                # the autocast precision; None = fp32. Named "amp" since GPU autocast was the only one, so that
                # fp32 stores (and GPU bf16 ones) keep their keys
                "amp": None if self.precision == "fp32" else self.precision}

    # -------------------------------------------------------------------------------- core
    def encode_shard(self, sentences: Sequence[Sentence], *, out_dtype=np.float32
                     ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Vectors of a group of sentences at ``resid_post``, every layer: :meth:`encode_sites` for that site.

        Returns:
            words: ``[layer, word, d_model]`` (word order = corpus order).
            sents: pooling -> ``[layer, sentence, d_model]``.
        """
        return self.encode_sites(sentences, out_dtype=out_dtype)["resid_post"]

    def encode_sites(self, sentences: Sequence[Sentence], *, sites: Sequence[str] = ("resid_post",),
                     layers: dict[str, list[int]] | None = None, out_dtype=np.float32
                     ) -> dict[str, tuple[np.ndarray, dict[str, np.ndarray]]]:
        """Vectors of a group of sentences at each of ``sites``, all read in the same forward passes (hooks).

        Words and sentences are pooled batch by batch straight into the output arrays, so memory holds one batch's
        hidden states and the outputs, never a token-level copy of the whole group. Only a sentence cut into several
        windows waits in a token buffer until its last window is done.

        Args:
            sites: site names (:mod:`probekit.activations.sites`).
            layers: site -> the layer numbers to keep (default: :func:`site_layers` of all layers).
            out_dtype: dtype of the returned arrays (``extract`` passes the store's dtype, so that nothing is
                held twice). Pooling is done in float32 either way.
        Returns:
            site -> (words ``[layer, word, width]``, pooling -> ``[layer, sentence, width]``), layers in the order
            of ``layers[site]``.
        """
        import torch

        sites = check_sites(sites)
        n_all = self.lm.num_layers + 1
        layers = {s: list(layers[s]) if layers and s in layers else site_layers(s, n_all) for s in sites}
        config = self.lm.model.config
        aligned = align_batch(self.lm.tokenizer, sentences)
        pieces = []  # (length, sentence index, window index, window start, window end)
        whole = []  # per sentence: one window holds all of it (pooled straight from the batch)
        owners, n_windows = [], []  # n_windows counts down as a windowed sentence's windows are done
        word_off = np.zeros(len(sentences) + 1, dtype=np.int64)
        for si, a in enumerate(aligned):
            windows, owner = plan_windows(max(a.n_tokens, 1), self.max_content, causal=self.causal)
            if len(windows) > 1:
                self.stats["windowed_sentences"] += 1
            self.stats["repaired_words"] += a.repaired
            self.stats["borrowed_words"] += a.borrowed
            owners.append(owner)
            n_windows.append(len(windows))
            whole.append(len(windows) == 1 and a.n_tokens > 0)
            word_off[si + 1] = word_off[si] + len(a.word_tokens)
            for wi, (s, e) in enumerate(windows):
                pieces.append((len(self.prefix) + (e - s) + len(self.suffix), si, wi, s, e))
        result, out_t = {}, {}
        for site in sites:
            d, n_layers = site_width(config, site), len(layers[site])
            words = np.zeros((n_layers, int(word_off[-1]), d), dtype=out_dtype)
            sents = {k: np.zeros((n_layers, len(sentences), d), dtype=out_dtype) for k in self.sentence_poolings}
            result[site] = (words, sents)
            out_t[site] = (torch.from_numpy(words), {k: torch.from_numpy(v) for k, v in sents.items()})
        pending: dict[tuple[str, int], np.ndarray] = {}  # (site, sentence) -> float32 token buffer (windowed ones)
        model = self.lm.model
        p = len(self.prefix)
        batches = self.batches(pieces, aligned)  # before the context and hooks (see `batches`)
        with kept_heap(), forward_context(model, self.device, self.precision), record_sites(model, sites) as recorded:
            for batch in batches:
                t0 = time.perf_counter()
                try:
                    out = model(**batch.model_inputs(self.device), output_hidden_states=True)
                except RuntimeError as e:
                    if "out of memory" in str(e).lower() or "can't allocate" in str(e).lower():
                        raise ModelError(f"Out of memory running {self.lm.name} on a batch of {batch.ids.shape[0]} x "
                                         f"{batch.width} tokens. Lower batch_tokens (now {self.batch_tokens}, e.g. "
                                         f"--batch-tokens {max(256, self.batch_tokens // 4)}), or use a smaller "
                                         "model or dtype.") from None
                    raise
                # each site's tensors of the kept layers (sub-layer site lists hold blocks 1..L at 0..L-1)
                tensors = {site: [out.hidden_states[k] if site == "resid_post" else recorded[site][k - 1]
                                  for k in layers[site]] for site in sites}
                whole_rows = [(start, piece[1]) for start, piece in zip(batch.starts, batch.pieces) if whole[piece[1]]]
                for site in sites:
                    self._pool_whole(tensors[site], whole_rows, aligned, word_off, *out_t[site])
                parts = [(start, piece) for start, piece in zip(batch.starts, batch.pieces) if not whole[piece[1]]]
                for start, (ln, si, wi, s, e) in parts:  # windowed sentences: into their token buffers
                    a = aligned[si]
                    own = owners[si][s:e] == wi
                    n_windows[si] -= 1
                    for site in sites:
                        words, sents = result[site]
                        # this window's tokens, [layer, token, width]
                        h = torch.stack([t.reshape(-1, t.shape[-1])[start:start + ln].float()
                                         for t in tensors[site]]).cpu().numpy()
                        buf = pending.setdefault((site, si), np.zeros((h.shape[0], max(a.n_tokens, 1), h.shape[-1]),
                                                                      dtype=np.float32))
                        if a.n_tokens:
                            buf[:, s:e][:, own] = h[:, p:p + (e - s)][:, own]
                        if wi == 0 and "cls" in sents:
                            sents["cls"][:, si] = h[:, 0]
                        if n_windows[si] == 0:  # its last window: pool it and free its buffer
                            buf = pending.pop((site, si))
                            words[:, word_off[si]:word_off[si + 1]] = pool_words(buf, a.word_tokens,
                                                                                 self.word_pooling, a.heads)
                            if "mean" in sents:
                                sents["mean"][:, si] = buf.mean(axis=1)
                            if "last" in sents:
                                sents["last"][:, si] = buf[:, -1]
                del out, tensors  # the freed buffers stay in the heap for the next batch (`heap.kept_heap`)
                self.stats["forward_seconds"] += time.perf_counter() - t0
                self.stats["tokens"] += batch.real_tokens
                self.stats["padded_tokens"] += batch.ids.size
        return result

    @functools.cached_property
    def packing(self) -> Packing | None:
        """Several pieces per row where the model takes it (checked on the model, once per model object:
        :func:`~probekit.activations.batching.negotiate_packing`), else None (padded rows). A row never exceeds the
        model's window (its position tables and buffers end there); the check's three pieces need ~25 positions.
        Resolved on first use, so that planning and reusing stores run no forward pass."""
        lm = self.lm
        found = negotiate_packing(lm.model, lm.tokenizer, self.prefix, self.suffix, self.pad_id,
                                  causal=self.causal) if self._may_pack and lm.max_length >= 32 else None
        return dataclasses.replace(found, row_tokens=min(found.row_tokens, lm.max_length)) if found else None

    def batches(self, pieces, aligned):
        """The batches that run ``pieces`` with this extractor's layout (:func:`~probekit.activations.batching.make_batches`):
        the one batching of extraction and the intervention. Call it before entering the forward context or any hook:
        it resolves :attr:`packing`, whose check must run the plain model."""
        return make_batches(pieces, aligned, self.prefix, self.suffix, self.pad_id, batch_tokens=self.batch_tokens,
                            max_padding=self.max_padding, packing=self.packing)

    def _pool_whole(self, hidden_states, whole, aligned, word_off, words_t, sents_t) -> None:
        """Pool the sentences of a batch that fit one window, layer by layer, into the output tensors.

        ``whole`` lists (flat index of the piece's first token, sentence index). Gathers index the flattened
        ``[row * width + position]`` hidden states; mean pooling sums with ``index_add_`` and divides by the counts.
        The sentence mean adds every flat row straight into its sentence's slot (rows outside any sentence into a
        spare one), without gathering the content rows into a copy first: the same additions in the same order, so
        the same bits.
        """
        import torch

        if not whole:
            return
        p = len(self.prefix)
        dev = hidden_states[0].device
        src, dst, seg_count = [], [], []  # word pooling: flat token row -> local word
        n_local = 0
        sent_rows = []  # global sentence index of each entry of `whole`
        row_sent = np.full(hidden_states[0].numel() // hidden_states[0].shape[-1], len(whole), dtype=np.int64)
        last_rows, cls_rows = [], []
        for k, (start, si) in enumerate(whole):
            a = aligned[si]
            base = start + p
            for toks, head in zip(a.word_tokens, a.heads):
                if self.word_pooling == "first":
                    src.append(base + head)
                elif self.word_pooling == "last":
                    src.append(base + toks[-1])
                else:
                    src.extend(base + t for t in toks)
                    dst.extend([n_local] * len(toks))
                    seg_count.append(len(toks))
                n_local += 1
            sent_rows.append(si)
            row_sent[base:base + a.n_tokens] = k  # every flat row -> its local sentence (sentence mean)
            last_rows.append(base + a.n_tokens - 1)
            cls_rows.append(start)

        def idx(x):
            return torch.as_tensor(np.asarray(x, dtype=np.int64), device=dev)

        word_dst = idx(np.concatenate([np.arange(word_off[si], word_off[si + 1]) for _, si in whole]))
        sent_dst = idx(sent_rows)
        src_t = idx(src)
        if self.word_pooling == "mean":
            dst_t, cnt_w = idx(dst), idx(seg_count).unsqueeze(1).float()
        row_sent_t = idx(row_sent)
        cnt_s = idx([aligned[si].n_tokens for _, si in whole]).unsqueeze(1).float()
        last_t, cls_t = idx(last_rows), idx(cls_rows)
        out_dt = words_t.dtype
        for layer, h in enumerate(hidden_states):
            flat = h.reshape(-1, h.shape[-1]).float().to(dev)  # layers split over devices (device_map)
            if self.word_pooling == "mean":
                w = torch.zeros(n_local, flat.shape[1], device=dev).index_add_(0, dst_t, flat.index_select(0, src_t))
                w /= cnt_w
            else:
                w = flat.index_select(0, src_t)
            words_t[layer].index_copy_(0, word_dst, w.cpu().to(out_dt))
            if "mean" in sents_t:
                m = torch.zeros(len(whole) + 1, flat.shape[1], device=dev).index_add_(0, row_sent_t, flat)
                sents_t["mean"][layer].index_copy_(0, sent_dst, (m[:-1] / cnt_s).cpu().to(out_dt))
            if "last" in sents_t:
                sents_t["last"][layer].index_copy_(0, sent_dst, flat.index_select(0, last_t).cpu().to(out_dt))
            if "cls" in sents_t:
                sents_t["cls"][layer].index_copy_(0, sent_dst, flat.index_select(0, cls_t).cpu().to(out_dt))


def extract(model, sentences: Sequence[Sentence], *, site: str = "resid_post", layers: Sequence[int] | None = None,
            **kw) -> ActivationStore:
    """Extract (or reuse) the activation store of ``sentences`` for ``model`` at one ``site``: :func:`extract_sites`
    with that site (same arguments)."""
    return extract_sites(model, sentences, sites=[site], layers=layers, **kw)[site]


def default_shard_words(model) -> int:
    """Words per shard: about 64 MiB of float16 word vectors over all layers (the same cut for every site and layer
    selection, so that one forward pass fills a shard of each site's store)."""
    return max(256, (64 << 20) // (2 * (model.num_layers + 1) * model.hidden_size))


def plan_stores(model, ex: "Extractor", sentences: Sequence[Sentence], *, sites: Sequence[str] = ("resid_post",),
                layers: Sequence[int] | None = None, dataset: str = "custom", split: str = "custom",
                data_checksum: str | None = None, store_root: str | os.PathLike | None = None,
                dtype: str = "float16") -> list[StorePlan]:
    """The stores :func:`extract_sites` writes (or reuses) for these arguments, one per site.

    The site (when not ``resid_post``), the layers (when chosen) and the dtype are in the key only when not the
    default, so that the stores made before sites and layer selection keep their keys."""
    if dtype not in DTYPES:
        raise unknown_name("store dtype", dtype, DTYPES)
    check_name(split, "The split name (part of the store's folder name)")
    root = Path(store_root) if store_root else default_store_root()
    data_checksum = data_checksum or corpus_checksum(sentences)
    n_all = model.num_layers + 1
    out = []
    for site in check_sites(sites):
        kept = site_layers(site, n_all, layers)
        if not kept:
            raise ConfigError(f"Config 'layers' = {list(layers or [])} leaves no layer for site {site} (sub-layer "
                              "sites have no layer 0): add a block's layer (1..) or leave the site out.")
        spec = {"model": model.identity, "data": {"dataset": dataset, "split": split, "checksum": data_checksum,
                                                  "n_sentences": len(sentences)},
                "extraction": ex.settings(), "dtype": dtype}
        if site != "resid_post":
            spec["site"] = site
        if kept != list(range(n_all)):
            spec["layers"] = kept
        key = store_key(spec)
        name = f"{Path(model.name).name.replace('@', '_')}-{split}-{key}"
        out.append(StorePlan(site, root / name, key, spec, kept, site_width(model.model.config, site)))
    return out


def _commit_shard(writers, p, got: dict, stats: dict, dtype: str) -> None:
    """Write shard ``p`` of every site in ``got`` (``{site: (words, {pooling: sentence vectors})}``) in the store's
    dtype and record it in each site's manifest."""
    for w in writers:
        words, sents = got.pop(w.plan.site)
        arrays = {"words": to_disk(words, dtype), **{f"sent-{k}": to_disk(v, dtype) for k, v in sents.items()}}
        w.commit(p, arrays, stats)
        del words, sents, arrays


def extract_sites(model, sentences: Sequence[Sentence], *, sites: Sequence[str] = ("resid_post",),
                  layers: Sequence[int] | None = None, dataset: str = "custom", split: str = "custom",
                  data_checksum: str | None = None, store_root: str | os.PathLike | None = None,
                  word_pooling: str | None = None, dtype: str = "float16", prepend_bos: bool | None = None,
                  batch_tokens: int | None = None, shard_words: int | None = None, strict: bool = False,
                  progress: bool = True, max_length: int | None = None, precision: str | None = "auto",
                  packing: bool = True, _stop_after_shards: int | None = None) -> dict[str, ActivationStore]:
    """Extract (or reuse) the activation stores of ``sentences`` for ``model``, one per site, all sites read in the
    same forward passes: ``{site: ActivationStore}``.

    Running again with the same inputs reuses the finished stores and does no forward pass; an
    interrupted store resumes from its last committed shard (a shard is computed when any site lacks it).

    Args:
        model: a :class:`~probekit.activations.models.LoadedModel`.
        sentences: the split's sentences, in order.
        sites: where the vectors are read (:mod:`probekit.activations.sites`; default ``resid_post``, the block
            outputs).
        layers: the layers stored (default all; sub-layer sites never have layer 0).
        dataset, split: names recorded in the manifest.
        data_checksum: identifies the data (default: computed from the sentences' text and words).
        store_root: folder holding stores (default ``$PROBEKIT_STORE_DIR`` or the user cache).
        word_pooling: ``first`` / ``last`` / ``mean`` (default first for encoders, last for decoders).
        dtype: ``float16`` (default), ``bfloat16`` or ``float32`` on disk.
        strict: a corrupt or foreign shard stops the run (StoreError) instead of being recomputed.
        precision: ``auto`` (default), ``fp32``, ``bf16`` or ``fp16`` (autocast); see :func:`resolve_precision`.
        packing: several sentences per row where the model takes it (:mod:`probekit.activations.batching`); False
            runs one per row. Either way each sentence runs as it would alone: the vectors differ in the last bits only.
    """
    if not sentences:
        raise StoreError(f"No sentences to extract for {dataset}/{split}: the split is empty.")
    empty = next((s for s in sentences if len(s) == 0), None)
    if empty is not None:
        raise DataError(f"Sentence {empty.sent_id!r} of {dataset}/{split} has no words; leave it out before "
                        "extracting (CoNLL-U files never give one; Sentence.from_words([]) does).")
    if dtype not in DTYPES:
        raise unknown_name("store dtype", dtype, DTYPES)
    ex = Extractor(model, word_pooling=word_pooling, prepend_bos=prepend_bos, batch_tokens=batch_tokens,
                   max_length=max_length, precision=precision, packing=packing)
    plans_by_site = plan_stores(model, ex, sentences, sites=sites, layers=layers, dataset=dataset, split=split,
                                data_checksum=data_checksum, store_root=store_root, dtype=dtype)
    words_per = [len(s) for s in sentences]
    shard_words = shard_words or default_shard_words(model)
    plans = plan_shards(words_per, max_words=shard_words)
    writers = [StoreWriter(sp, model, ex, sentences, plans, shard_words, strict) for sp in plans_by_site]
    locks = []
    try:
        for w in writers:
            w.store_dir.mkdir(parents=True, exist_ok=True)
            locks.append(acquire_lock(w.store_dir / ".lock", str(w.store_dir), StoreError))
        for w in writers:
            w.resume()
        todo = [p for p in plans if any(p.index not in w.done for w in writers)]
        if todo:
            total_words = sum(p.word_end - p.word_start for p in todo)
            log.info("Extracting %s/%s with %s (%s): %d of %d shards to do (%d words)", dataset, split, model.name,
                     ", ".join(w.plan.site for w in writers), len(todo), len(plans), total_words)
            bar = progress_bar(total_words, f"extract {Path(model.name).name} {split}", unit="word", enabled=progress)
            # bfloat16 has no numpy dtype: its shards are pooled in float32 and rounded when written
            np_dtype = np.float32 if dtype == "bfloat16" else DTYPES[dtype]
            # one heap kept across the shards, handed back at the end; shard k is committed on a thread while shard
            # k+1 is computed (at most one commit in flight: its error stops the run at the next shard)
            with kept_heap(), paused_gc(), ThreadPoolExecutor(1, thread_name_prefix="probekit-commit") as committer:
                pending = None
                for n_done, p in enumerate(todo):
                    if _stop_after_shards is not None and n_done >= _stop_after_shards:
                        break
                    need = [w for w in writers if p.index not in w.done]
                    got = ex.encode_sites(sentences[p.sent_start:p.sent_end], sites=[w.plan.site for w in need],
                                          layers={w.plan.site: w.plan.layers for w in need}, out_dtype=np_dtype)
                    stats, ex.stats = ex.stats, {k: 0 for k in ex.stats}
                    if pending is not None:
                        pending.result()
                    pending = committer.submit(_commit_shard, need, p, got, stats, dtype)
                    del got
                    trim_if_over()  # the heap kept for reuse stays bounded over any corpus
                    bar.update(p.word_end - p.word_start)
                if pending is not None:
                    pending.result()
            bar.close()
        for w in writers:
            w.finish()
    finally:
        for lock in locks:
            lock.release()
    out = {}
    for w in writers:
        if not w.manifest["complete"]:
            raise StoreError(f"Extraction of {w.store_dir} stopped after {len(w.done)} of {len(plans)} shards; "
                             "run it again to resume.")
        borrowed = w.manifest.get("stats", {}).get("borrowed_words", 0)
        if borrowed:  # every run that uses the store says it, not only the one that extracted it
            log.warning("%s: %d word(s) have no subword of their own (e.g. a lone zero-width space or no-break space) "
                        "and share a neighbour's vector (stats.borrowed_words in its manifest.json).", w.store_dir,
                        borrowed)
        store = ActivationStore(w.store_dir)
        store.computed_shards = w.computed  # shards computed by this call (0 = pure reuse, no forward pass)
        out[w.plan.site] = store
    return out
