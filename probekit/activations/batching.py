"""Forward batches of sentence windows: which windows go together, and their padded input ids and mask.

A *piece* is one window of one sentence: ``(length with special tokens, sentence, window, start, end)``, the
windows' subword range ``[start, end)`` (:func:`probekit.activations.align.plan_windows`). Pieces sorted by length
are packed greedily: a batch grows while its padded size fits the token budget and its padding stays under
``max_padding`` of its real tokens. :mod:`probekit.activations.attention` batches this way;
:meth:`probekit.activations.extract.Extractor.encode_sites` packs by the same rule.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np


def pack(pieces: Sequence[tuple], batch_tokens: int, max_padding: float) -> Iterator[list[tuple]]:
    """Consecutive batches of ``pieces`` (sorted by length), each under ``batch_tokens`` padded tokens and
    ``max_padding`` of padding (a piece longer than the budget goes alone)."""
    i = 0
    while i < len(pieces):
        j, real = i + 1, pieces[i][0]
        while (j < len(pieces) and pieces[j][0] * (j - i + 1) <= batch_tokens
               and pieces[j][0] * (j - i + 1) <= (1 + max_padding) * (real + pieces[j][0])):
            real += pieces[j][0]
            j += 1
        yield list(pieces[i:j])
        i = j


def inputs(batch: Sequence[tuple], token_ids: Sequence[Sequence[int]], prefix: list[int], suffix: list[int],
           pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """``(ids, mask)`` ``[batch, longest]`` int64 of a batch: each window's subwords between the special tokens,
    right-padded with ``pad_id`` (mask 0)."""
    longest = max(p[0] for p in batch)
    ids = np.full((len(batch), longest), pad_id, dtype=np.int64)
    mask = np.zeros((len(batch), longest), dtype=np.int64)
    for b, (ln, si, _wi, s, e) in enumerate(batch):
        ids[b, :ln] = prefix + list(token_ids[si][s:e]) + suffix
        mask[b, :ln] = 1
    return ids, mask
