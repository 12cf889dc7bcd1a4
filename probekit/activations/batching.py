"""How token rows are packed into the model's padded batches: one way, for extraction and for the intervention.

A *piece* is one row to run: ``(row length with special tokens, sentence index, window index, window start, window
end)``, the window being a slice of the sentence's content subwords (:func:`probekit.activations.align.plan_windows`).
:func:`pack_batches` sorts the pieces by length (ties by sentence, then window: a deterministic batch composition)
and cuts them into batches under a token budget, each padded by at most ``max_padding`` of its real tokens;
:func:`batch_inputs` lays a batch out as ``input_ids`` and ``attention_mask`` (special tokens around the content,
padding on the right).

:class:`~probekit.activations.extract.Extractor` and :func:`probekit.causal.intervene.forward` both run through
these, so that the same sentences run in the same batches with the same tokens: a row's vectors depend on its
batch's shape in the last bits (docs/design.md 19), and the vectors an eraser was fitted on are the vectors it edits.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

#: (row length with special tokens, sentence index, window index, window start, window end)
Piece = tuple[int, int, int, int, int]


def pack_batches(pieces: Sequence[Piece], batch_tokens: int, max_padding: float) -> Iterator[list[Piece]]:
    """The pieces sorted by (length, sentence, window), cut into consecutive batches: a batch grows while
    ``rows x longest row`` stays within ``batch_tokens`` and within ``1 + max_padding`` times its real tokens (a
    piece longer than the budget runs alone)."""
    order = sorted(pieces, key=lambda p: (p[0], p[1], p[2]))
    i = 0
    while i < len(order):
        j, real = i + 1, order[i][0]
        while (j < len(order) and order[j][0] * (j - i + 1) <= batch_tokens
               and order[j][0] * (j - i + 1) <= (1 + max_padding) * (real + order[j][0])):
            real += order[j][0]
            j += 1
        yield order[i:j]
        i = j


def batch_inputs(batch: Sequence[Piece], aligned, prefix: list[int], suffix: list[int], pad_id: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """``(input_ids, attention_mask)``, both ``int64 [rows, longest]``: each row is ``prefix + the window's subword
    ids + suffix`` (``aligned``: :func:`probekit.activations.align.align_batch`'s sentences), padded with
    ``pad_id`` on the right. Content subword ``t`` of a row sits at position ``len(prefix) + t - start``."""
    longest = max(p[0] for p in batch)
    ids = np.full((len(batch), longest), pad_id, dtype=np.int64)
    mask = np.zeros((len(batch), longest), dtype=np.int64)
    for b, (ln, si, _, s, e) in enumerate(batch):
        ids[b, :ln] = prefix + aligned[si].token_ids[s:e] + suffix
        mask[b, :ln] = 1
    return ids, mask
