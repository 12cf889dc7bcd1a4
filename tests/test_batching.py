"""The one batching of token rows (probekit.activations.batching), shared by extraction and the intervention."""
from __future__ import annotations

import numpy as np
import pytest

from probekit.activations.batching import Packing, make_batches, negotiate_packing, pack_batches, plan_rows


class A:  # an aligned sentence: only its subword ids are read
    def __init__(self, ids):
        self.token_ids = ids


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


def test_pack_batches_joins_neighbouring_lengths_a_row_by_row_check_cuts():
    # forty rows of 30 then ten of 31: one 31 after the forty is 3.3% padding, all ten are 0.6%
    pieces = [(30, i, 0, 0, 28) for i in range(40)] + [(31, 40 + i, 0, 0, 29) for i in range(10)]
    assert [len(b) for b in pack_batches(pieces, batch_tokens=4096, max_padding=0.03)] == [50]


def test_plan_rows_first_fit_decreasing():
    rng = np.random.default_rng(1)
    pieces = [(int(n), si, 0, 0, int(n) - 2) for si, n in enumerate(rng.integers(3, 60, size=300))]
    pieces.append((200, 300, 0, 0, 198))  # longer than a row: a row of its own
    rows = plan_rows(pieces, 128)
    assert sorted(p for r in rows for p in r) == sorted(pieces)
    assert all(len(r) == 1 or sum(p[0] for p in r) <= 128 for r in rows)
    assert [(200, 300, 0, 0, 198)] in rows
    assert sum(p[0] for p in pieces) / (128 * (len(rows) - 1) + 200) > 0.95  # rows nearly full
    assert plan_rows(list(reversed(pieces)), 128) == rows


def test_padded_batch_lays_out_special_tokens_window_and_padding():
    aligned = [A([5, 6, 7, 8]), A([9])]
    (b,) = make_batches([(4, 1, 0, 0, 1), (5, 0, 1, 1, 3)], aligned, [101, 102], [103], pad_id=0, batch_tokens=100,
                        max_padding=0.5)
    assert b.ids.tolist() == [[101, 102, 9, 103, 0], [101, 102, 6, 7, 103]]
    assert b.inputs["attention_mask"].tolist() == [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]
    assert b.starts == [0, 5] and b.real_tokens == 9 and set(b.inputs) == {"attention_mask"}
    assert b.ids.dtype == np.int64


@pytest.mark.parametrize("causal", [False, True])
def test_packed_row_block_mask_and_restarting_positions(causal):
    aligned = [A([5, 6, 7]), A([9]), A([4, 4])]
    pieces = [(5, 0, 0, 0, 3), (3, 1, 0, 0, 1), (4, 2, 0, 0, 2)]
    packing = Packing("3d", causal, position_offset=2, row_tokens=12)
    (b,) = make_batches(pieces, aligned, [1], [2], pad_id=0, batch_tokens=100, max_padding=0.5, packing=packing)
    assert b.ids.tolist() == [[1, 5, 6, 7, 2, 1, 4, 4, 2, 1, 9, 2]]  # longest first
    assert b.starts == [0, 5, 9] and [p[1] for p in b.pieces] == [0, 2, 1] and b.real_tokens == 12
    assert b.inputs["position_ids"].tolist() == [[2, 3, 4, 5, 6, 2, 3, 4, 5, 2, 3, 4]]
    mask = b.inputs["attention_mask"][0].astype(bool)
    seg = np.repeat([0, 1, 2], [5, 4, 3])
    want = seg[:, None] == seg[None, :]
    if causal:
        want &= np.tril(np.ones((12, 12), dtype=bool))
    assert (mask == want).all()
    four = make_batches(pieces, aligned, [1], [2], pad_id=0, batch_tokens=100, max_padding=0.5,
                        packing=Packing("4d", causal, row_tokens=12))
    m4 = next(four).inputs["attention_mask"]
    assert m4.shape == (1, 1, 12, 12) and ((m4[0, 0] == 0) == want).all() and m4.min() < -1e30


def test_padding_of_a_packed_batch_attends_to_itself_only():
    aligned = [A([5] * 8), A([6] * 2)]
    rows = make_batches([(10, 0, 0, 0, 8), (4, 1, 0, 0, 2)], aligned, [1], [2], pad_id=0, batch_tokens=100,
                        max_padding=5.0, packing=Packing("3d", False, row_tokens=10))
    (b,) = list(rows)  # two rows (4 and 10 tokens; batched by fill), the shorter padded by 6
    assert [p[1] for p in b.pieces] == [1, 0] and b.starts == [0, 10]
    mask = b.inputs["attention_mask"][0]
    assert b.ids.shape == (2, 10) and (np.diag(mask)[4:] == 1).all() and mask[4:, :4].sum() == 0
    assert mask[:4, 4:].sum() == 0


def test_negotiation_falls_back_when_the_model_rejects_packed_inputs(tiny_bert_dir):
    import torch

    from probekit.activations.extract import Extractor
    from probekit.activations.models import load_model

    lm = load_model(str(tiny_bert_dir), device="cpu")
    # transformers 4.x BERT takes a 3D mask, 5.x a 4D one; rows end at the model's window (64 positions here)
    packing = Extractor(lm).packing
    assert packing is not None and not packing.causal and packing.row_tokens == 64

    class PositionsIgnored(torch.nn.Module):  # packs without error, but a piece does not run as it runs alone
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask=None, position_ids=None, **kw):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask, **kw)

    wrapped = PositionsIgnored(lm.model)
    assert negotiate_packing(wrapped, lm.tokenizer, [101], [102], 0, causal=False) is None
    # 16-bit weights: their own rounding (~1e-2 relative) passes, a wrong layout (~0.7) still does not
    half = load_model(str(tiny_bert_dir), device="cpu", dtype=torch.bfloat16)
    assert Extractor(half).packing == packing
    assert negotiate_packing(PositionsIgnored(half.model), half.tokenizer, [101], [102], 0, causal=False) is None
