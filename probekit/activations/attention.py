"""Word-level attention maps: every layer's and head's attention weights between the words of a sentence.

Clark et al. (2019, "What does BERT look at?", section 4.1) turn token-to-token attention into word-to-word
attention: attention **to** a word split into several subwords is the **sum** of the attention to its subwords,
attention **from** such a word the **mean** of its subwords' attention rows, so that the attention from each word
still sums to what its subwords gave. Here the subwords of a word are those of the extraction's alignment
(:func:`probekit.activations.align.align_batch`: the sentence tokenized once as natural text, the same
``prefix``/``suffix`` special tokens and windows as :class:`~probekit.activations.extract.Extractor`), so the
attention features of a word pair and the hidden-state features of its words read the same subwords.

For each sentence of ``n`` words, :func:`word_attention` gives (layers = blocks ``1..L``, as the sub-layer sites):

* ``maps``      ``[L, H, n, n]``: ``maps[l, h, i, j]`` = attention of head h of block l from word i to word j;
* ``to_other``  ``[L, H, n]``: attention from word i to the *other* tokens: the special tokens (``[CLS]``/``[SEP]``,
  a decoder's BOS) and any subword the alignment gives to no word (a lone space token of a byte-level BPE);
* ``from_other`` ``[L, H, n]``: the mean over the other tokens of their attention to word i (0 where none can see
  the word, e.g. a decoder's BOS, which attends only to itself).

So the attention from each word sums to one over the words and the other tokens (``maps.sum(-1) + to_other``).
Clark et al. score the artificial ROOT from the attention to ``[CLS]`` and ``[SEP]``; the two ``*_other`` arrays
carry that (:mod:`probekit.probing.attention_pairs`).

A sentence longer than the model's window is cut into the extraction's overlapping windows
(:func:`~probekit.activations.align.plan_windows`); each subword's attention row and the special tokens' attention to
it are read from its owner window (the one extraction reads it from), and attention to a subword outside that window
is 0 (the model never computed it).
"""
from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from probekit._progress import progress_bar
from probekit.activations.align import AlignedSentence, align_batch, plan_windows
from probekit.activations.batching import make_batches
from probekit.activations.precision import forward_context
from probekit.data.conllu_io import Sentence
from probekit.errors import ModelError

log = logging.getLogger(__name__)


@dataclass
class WordAttention:
    """The word-level attention of one sentence (see the module docstring); float32."""

    maps: np.ndarray
    to_other: np.ndarray
    from_other: np.ndarray

    @property
    def n_words(self) -> int:
        return self.maps.shape[-1]


def _word_matrices(n_tokens: int, word_tokens: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """``(to_word [T, W], from_word [W, T])``: right-multiplying by ``to_word`` sums a word's subword columns,
    left-multiplying by ``from_word`` averages its subword rows."""
    to_word = np.zeros((n_tokens, len(word_tokens)), dtype=np.float32)
    from_word = np.zeros((len(word_tokens), n_tokens), dtype=np.float32)
    for w, toks in enumerate(word_tokens):
        to_word[list(toks), w] = 1.0
        from_word[w, list(toks)] = 1.0 / len(toks)
    return to_word, from_word


def word_level(token_maps: np.ndarray, word_tokens: Sequence[Sequence[int]]) -> np.ndarray:
    """``[..., T, T]`` token-to-token attention -> ``[..., W, W]`` word-to-word attention: attention to a word is
    the sum over its subwords (columns), attention from a word the mean over its subwords (rows)."""
    to_word, from_word = _word_matrices(token_maps.shape[-1], word_tokens)
    return from_word @ token_maps.astype(np.float32) @ to_word


def _token_attention(aligned: AlignedSentence, windows, owner, attn_of_window, n_layers: int, n_heads: int,
                     n_prefix: int, n_suffix: int):
    """Token-level ``[L, H, T, T]`` attention of one sentence and its ``[L, H, T]`` attention to / from the other
    tokens, each token's row (and the other tokens' attention to it) read from its owner window."""
    T = aligned.n_tokens
    in_word = np.zeros(T, dtype=bool)
    in_word[[t for toks in aligned.word_tokens for t in toks]] = True
    A = np.zeros((n_layers, n_heads, T, T), dtype=np.float32)
    to_other = np.zeros((n_layers, n_heads, T), dtype=np.float32)
    from_other = np.zeros((n_layers, n_heads, T), dtype=np.float32)
    for wi, (s, e) in enumerate(windows):
        a = attn_of_window(wi)  # [L, H, P + (e - s) + S, same] of this window
        own = np.flatnonzero(owner[s:e] == wi)  # window positions (content) of the tokens it owns
        if not len(own):
            continue
        content = slice(n_prefix, n_prefix + e - s)
        other = (list(range(n_prefix)) + [n_prefix + k for k in np.flatnonzero(~in_word[s:e])]
                 + list(range(n_prefix + e - s, n_prefix + e - s + n_suffix)))
        rows = a[:, :, n_prefix + own]  # [L, H, owned, window length]
        A[:, :, s + own, s:e] = rows[:, :, :, content]
        to_other[:, :, s + own] = rows[:, :, :, other].sum(-1)
        if other:
            from_other[:, :, s + own] = a[:, :, other][:, :, :, n_prefix + own].mean(2)
    return A, to_other, from_other


@contextmanager
def eager_attention(model):
    """Run ``model`` with the eager attention inside the ``with`` where it can be switched (SDPA and flash attention
    return no weights); the implementation it had is restored after. A model that cannot switch (transformers 4.x's
    BERT) falls back to its manual attention by itself when asked for the weights; :func:`word_attention` checks
    that weights came back."""
    before = getattr(model.config, "_attn_implementation", None)
    switched = False
    can = getattr(model, "_can_set_attn_implementation", lambda: hasattr(model, "set_attn_implementation"))
    if before not in (None, "eager") and hasattr(model, "set_attn_implementation") and can():
        try:
            model.set_attn_implementation("eager")
            switched = model.config._attn_implementation == "eager"
        except (ValueError, NotImplementedError):  # not switchable: the fallback above
            pass
    try:
        yield
    finally:
        if switched:
            model.set_attn_implementation(before)


def word_attention(ex, sentences: Sequence[Sentence], *, progress: bool = False) -> list[WordAttention]:
    """The word-level attention of every sentence (module docstring), every block and head, read with the settings
    of ``ex`` (an :class:`~probekit.activations.extract.Extractor`: its model, special tokens, window length,
    precision, token budget and padding limit). Windows are batched as extraction batches them
    (:func:`probekit.activations.batching.make_batches`, one piece per row); padding is masked."""
    import torch

    lm = ex.lm
    model = lm.model
    cfg = model.config
    n_layers, n_heads = int(lm.num_layers), int(cfg.num_attention_heads)
    aligned = align_batch(lm.tokenizer, sentences)
    P, S = len(ex.prefix), len(ex.suffix)
    pieces = []  # (length with specials, sentence, window, start, end)
    plans = []
    for si, a in enumerate(aligned):
        windows, owner = plan_windows(max(a.n_tokens, 1), ex.max_content, causal=ex.causal)
        plans.append((windows, owner))
        for wi, (s, e) in enumerate(windows):
            pieces.append((P + (e - s) + S, si, wi, s, e))
    got: dict[tuple[int, int], np.ndarray] = {}
    left = [len(w) for w, _ in plans]
    out: list[WordAttention | None] = [None] * len(sentences)
    bar = progress_bar(len(sentences), f"attention {lm.name}", unit="sentence", enabled=progress)
    t0 = time.perf_counter()
    with forward_context(model, ex.device, ex.precision), eager_attention(model):
        # one piece per row (padded batches): the maps of a packed row would mix pieces
        for batch in make_batches(pieces, aligned, ex.prefix, ex.suffix, ex.pad_id, batch_tokens=ex.batch_tokens,
                                  max_padding=ex.max_padding):
            res = model(**batch.model_inputs(ex.device), output_attentions=True)
            if res.attentions is None or len(res.attentions) != n_layers:
                raise ModelError(f"{lm.name} returned no attention weights for output_attentions=True; probekit "
                                 "cannot read attention features from it.")
            att = torch.stack([a.float() for a in res.attentions], 1).cpu().numpy()  # [B, L, H, len, len]
            for b, (ln, si, wi, s, e) in enumerate(batch.pieces):
                got[(si, wi)] = att[b, :, :, :ln, :ln]
                left[si] -= 1
                if left[si] == 0:  # its last window: build its word-level attention and free the windows
                    windows, owner = plans[si]
                    a = aligned[si]
                    A, to_o, from_o = _token_attention(a, windows, owner, lambda w, si=si: got[(si, w)], n_layers,
                                                       n_heads, P, S)
                    for w in range(len(windows)):
                        del got[(si, w)]
                    to_word, from_word = _word_matrices(a.n_tokens, a.word_tokens)
                    out[si] = WordAttention(maps=from_word @ A @ to_word, to_other=to_o @ from_word.T,
                                            from_other=from_o @ to_word)
                    bar.update(1)
            del res, att
    bar.close()
    log.info("%s: word-level attention of %d sentences in %.1fs", lm.name, len(sentences), time.perf_counter() - t0)
    return out  # type: ignore[return-value]
