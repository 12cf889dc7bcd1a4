"""The one batching of token rows (probekit.activations.batching), shared by extraction and the intervention."""
from __future__ import annotations

import numpy as np

from probekit.activations.batching import batch_inputs, pack_batches


def test_pack_batches_sorts_respects_budget_and_padding():
    rng = np.random.default_rng(0)
    pieces = [(int(n), si, 0, 0, int(n) - 2) for si, n in enumerate(rng.integers(3, 40, size=200))]
    pieces.append((500, 200, 0, 0, 498))  # longer than the budget: a batch of its own
    batches = list(pack_batches(pieces, batch_tokens=256, max_padding=0.03))
    flat = [p for b in batches for p in b]
    assert sorted(flat) == sorted(pieces) and flat == sorted(pieces, key=lambda p: (p[0], p[1], p[2]))
    for b in batches:
        longest, real = max(p[0] for p in b), sum(p[0] for p in b)
        assert len(b) == 1 or (len(b) * longest <= 256 and len(b) * longest <= 1.03 * real)
    assert batches[-1] == [(500, 200, 0, 0, 498)]
    assert list(pack_batches(list(reversed(pieces)), 256, 0.03)) == batches  # the order given does not matter


def test_batch_inputs_lays_out_special_tokens_window_and_padding():
    class A:  # an aligned sentence: only its subword ids are read
        def __init__(self, ids):
            self.token_ids = ids

    aligned = [A([5, 6, 7, 8]), A([9])]
    ids, mask = batch_inputs([(4, 1, 0, 0, 1), (5, 0, 1, 1, 3)], aligned, [101, 102], [103], pad_id=0)
    assert ids.tolist() == [[101, 102, 9, 103, 0], [101, 102, 6, 7, 103]]
    assert mask.tolist() == [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]
    assert ids.dtype == mask.dtype == np.int64
