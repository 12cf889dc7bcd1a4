"""How token rows are laid into the model's batches: one way, for extraction and for the intervention.

A *piece* is one token sequence to run: ``(length with special tokens, sentence index, window index, window start,
window end)``, the window being a slice of the sentence's content subwords
(:func:`probekit.activations.align.plan_windows`). Each piece runs as ``prefix + the window's subword ids + suffix``.

Two layouts, one :class:`Batch` type:

* **padded** (:func:`pack_batches`): one piece per row, rows sorted by length and cut into batches under a token
  budget, each padded by at most ``max_padding`` of its real tokens;
* **packed** (:class:`Packing`): several pieces share a row (first-fit decreasing into rows of ``row_tokens``), each
  with its own position ids and a block-diagonal attention mask (causal within the block for decoders), so that no
  token attends across pieces. Rows are then batched as padded rows are. A piece runs exactly as it would alone: its
  positions restart at the model's first position and it sees only itself; :func:`negotiate_packing` checks that on
  the model itself before it is used, and gives None (the padded layout) where the model's code does not take the
  inputs (docs/design.md 23).

:class:`~probekit.activations.extract.Extractor`, :func:`probekit.causal.intervene.forward` and the attention
features all run through :func:`make_batches`, so that the same sentences run in the same batches with the same
tokens: a piece's vectors depend on its batch's shape in the last bits (docs/design.md 19), and the vectors an
eraser was fitted on are the vectors it edits.
"""
from __future__ import annotations

import logging
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

log = logging.getLogger(__name__)

#: (row length with special tokens, sentence index, window index, window start, window end)
Piece = tuple[int, int, int, int, int]

#: Packed rows hold pieces up to this many tokens in all (a longer piece gets a row of its own). Attention in a
#: packed row computes (and masks) the pairs across its pieces, so shorter rows waste less; 128 was the fastest of
#: 128/256/512 in fp32 and bf16 (docs/design.md 23).
ROW_TOKENS = 128


def pack_batches(pieces: Sequence[Piece], batch_tokens: int, max_padding: float) -> Iterator[list[Piece]]:
    """The pieces sorted by (length, sentence, window), cut into consecutive batches, each within ``batch_tokens``
    (``rows x longest row``) and padded by at most ``max_padding`` of its real tokens (a piece longer than the budget
    runs alone).

    A batch takes the next piece when the batch would stay within the padding cap *with all the following pieces of
    that length that fit the budget*: rows of the new longest length only lower the padding share, so looking one
    length ahead joins neighbouring lengths (30 and 31 subwords: 1.6% padding) that a row-by-row check cuts apart (one
    31-subword row after forty of 30 is 3.3% padding). Bigger batches are faster matmuls (docs/design.md 23)."""
    order = sorted(pieces, key=lambda p: (p[0], p[1], p[2]))
    lengths = np.array([p[0] for p in order], dtype=np.int64)
    cum = np.concatenate([[0], np.cumsum(lengths)])
    run_end = np.searchsorted(lengths, lengths, side="right")  # one past the last piece of each piece's length
    i = 0
    while i < len(order):
        j = i + 1
        while j < len(order):
            n = int(lengths[j])
            k = min(int(run_end[j]), i + batch_tokens // n)  # the batch with that length's pieces that fit
            if k <= j or (k - i) * n > (1 + max_padding) * (cum[k] - cum[i]):
                break
            j += 1
        yield order[i:j]
        i = j


def plan_rows(pieces: Sequence[Piece], row_tokens: int) -> list[list[Piece]]:
    """Pieces packed into rows, first-fit decreasing: pieces by decreasing length (ties by sentence, window), each
    into the first row with room for it within ``row_tokens``, else a new row (a longer piece: a row of its own)."""
    rows: list[list[Piece]] = []
    fill: list[int] = []
    for piece in sorted(pieces, key=lambda p: (-p[0], p[1], p[2])):
        for r, used in enumerate(fill):
            if used + piece[0] <= row_tokens:
                rows[r].append(piece)
                fill[r] += piece[0]
                break
        else:
            rows.append([piece])
            fill.append(piece[0])
    return rows


@dataclass(frozen=True)
class Packing:
    """How a model takes packed rows (what :func:`negotiate_packing` found to work).

    Attributes:
        mask: ``"4d"``: an additive float ``[rows, 1, width, width]`` mask (0 = attend); ``"3d"``: a 0/1 ``[rows,
            width, width]`` mask (BERT-family code of transformers 4.x builds its 4D mask from it).
        causal: a token attends to its own piece's tokens up to itself only (decoders).
        position_offset: the model's first position id (RoBERTa-family models count from ``padding_idx + 1``).
        row_tokens: see :data:`ROW_TOKENS`.
    """

    mask: str
    causal: bool
    position_offset: int = 0
    row_tokens: int = ROW_TOKENS


@dataclass
class Batch:
    """One forward pass.

    Attributes:
        pieces: the pieces it runs.
        starts: flat index (``row * width + offset``) of each piece's first token (its first special token) in the
            ``[rows, width]`` layout, which is also the layout of every hidden state the model returns.
        ids: ``int64 [rows, width]`` input ids (``pad_id`` where no piece is).
        inputs: the other keyword inputs of the model (``attention_mask``; packed: also ``position_ids``), numpy.
        real_tokens: tokens of the pieces (``ids.size`` minus padding).
    """

    pieces: list[Piece]
    starts: list[int]
    ids: np.ndarray
    inputs: dict[str, np.ndarray] = field(default_factory=dict)
    real_tokens: int = 0

    @property
    def width(self) -> int:
        return int(self.ids.shape[1])

    def model_inputs(self, device) -> dict:
        """``input_ids`` and :attr:`inputs` as torch tensors on ``device``."""
        import torch

        return {"input_ids": torch.from_numpy(self.ids).to(device),
                **{k: torch.from_numpy(v).to(device) for k, v in self.inputs.items()}}


def _lay_out(rows: Sequence[Sequence[Piece]], aligned, prefix: list[int], suffix: list[int], pad_id: int,
             packing: Packing | None) -> Batch:
    """Rows of pieces as one :class:`Batch` (special tokens around each piece's window, padding on the right)."""
    width = max(sum(p[0] for p in row) for row in rows)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    seg = np.full((len(rows), width), -1, dtype=np.int64)  # which piece of its row a token belongs to; -1 = padding
    pos = np.zeros((len(rows), width), dtype=np.int64)
    pieces, starts = [], []
    for r, row in enumerate(rows):
        off = 0
        for k, piece in enumerate(row):
            ln, si, _, s, e = piece
            ids[r, off:off + ln] = prefix + aligned[si].token_ids[s:e] + suffix
            seg[r, off:off + ln] = k
            pos[r, off:off + ln] = np.arange(ln)
            pieces.append(piece)
            starts.append(r * width + off)
            off += ln
    real = int((seg >= 0).sum())
    if packing is None:
        return Batch(pieces, starts, ids, {"attention_mask": (seg >= 0).astype(np.int64)}, real)
    allowed = seg[:, :, None] == seg[:, None, :]
    if packing.causal:
        allowed &= np.tril(np.ones((width, width), dtype=bool))[None]
    pad = seg < 0  # padding attends to itself only (a row of nothing but masked keys would give NaN)
    allowed &= ~(pad[:, :, None] | pad[:, None, :])
    allowed |= np.eye(width, dtype=bool)[None] & pad[:, :, None]
    if packing.mask == "4d":
        mask = np.where(allowed, 0.0, np.finfo(np.float32).min).astype(np.float32)[:, None]
    else:
        mask = allowed.astype(np.int64)
    return Batch(pieces, starts, ids, {"attention_mask": mask, "position_ids": pos + packing.position_offset}, real)


def make_batches(pieces: Sequence[Piece], aligned, prefix: list[int], suffix: list[int], pad_id: int, *,
                 batch_tokens: int, max_padding: float, packing: Packing | None = None) -> Iterator[Batch]:
    """The batches that run ``pieces`` (``aligned``: :func:`probekit.activations.align.align_batch`'s sentences,
    whose ``token_ids`` fill the windows): padded (:func:`pack_batches`) or, with ``packing``, packed rows
    (:func:`plan_rows`) batched by their filled length under the same budget and padding cap."""
    if packing is None:
        for group in pack_batches(pieces, batch_tokens, max_padding):
            yield _lay_out([[p] for p in group], aligned, prefix, suffix, pad_id, None)
        return
    rows = plan_rows(pieces, packing.row_tokens)
    as_pieces = [(sum(p[0] for p in row), r, 0, 0, 0) for r, row in enumerate(rows)]
    for group in pack_batches(as_pieces, batch_tokens, max_padding):
        yield _lay_out([rows[g[1]] for g in group], aligned, prefix, suffix, pad_id, packing)


# ------------------------------------------------------------------------------------------ negotiation
_NEGOTIATED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
#: A packed piece must reproduce its padded vectors to this relative error (L2 norm, per piece and layer): float32
#: weights / 16-bit or quantized weights. Measured on minilm: 1e-6 in float32, 1e-2 with bfloat16 weights, 1e-3 with
#: float16; a dropped mask or dropped position ids give 0.66-0.71 in all three.
PACKING_TOLERANCE = {"float32": 1e-4, "other": 5e-2}


class _Ids:
    def __init__(self, ids):
        self.token_ids = ids


def _position_offset(model) -> int:
    """RoBERTa-family embeddings number positions from ``padding_idx + 1`` (they have ``padding_idx`` and make
    position ids from the input ids); every other family from 0."""
    emb = getattr(getattr(model, "embeddings", None), "padding_idx", None)
    return int(emb) + 1 if emb is not None else 0


def negotiate_packing(model, tokenizer, prefix: list[int], suffix: list[int], pad_id: int, *, causal: bool
                      ) -> Packing | None:
    """The :class:`Packing` this model takes, or None. Tries each mask form on three pieces packed into one row and
    keeps the first whose every layer's hidden states equal those of the pieces run alone (within
    :data:`PACKING_TOLERANCE` for the weights' dtype; the model's own precision, no autocast); remembered per model
    object."""
    import torch

    key = (tuple(prefix), tuple(suffix), pad_id, causal)
    memo = _NEGOTIATED.setdefault(model, {})
    if key in memo:
        return memo[key]
    text = "Probes read every layer of the frozen model, one word at a time."
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])[:12]
    aligned = [_Ids(ids[:5]), _Ids(ids[5:12]), _Ids(ids[:3])]
    P, S = len(prefix), len(suffix)
    pieces = [(P + len(a.token_ids) + S, si, 0, 0, len(a.token_ids)) for si, a in enumerate(aligned)]
    found = None
    with torch.inference_mode():
        alone = []
        try:
            for piece in pieces:
                b = _lay_out([[piece]], aligned, prefix, suffix, pad_id, None)
                alone.append([h[0].float() for h in model(**b.model_inputs(_device(model)),
                                                          output_hidden_states=True).hidden_states])
        except Exception as e:  # noqa: BLE001 - the plain forward fails: extraction reports it with its own message
            log.debug("packing not tried on %s: its plain forward pass fails: %s", type(model).__name__, e)
            memo[key] = None
            return None
        for form in ("4d", "3d"):
            packing = Packing(form, causal, _position_offset(model))
            b = _lay_out([pieces], aligned, prefix, suffix, pad_id, packing)
            try:
                hs = model(**b.model_inputs(_device(model)), output_hidden_states=True).hidden_states
            except Exception as e:  # noqa: BLE001 - a model that rejects the inputs does not take this form
                log.debug("packing with a %s mask fails on %s: %s", form, type(model).__name__, e)
                continue
            if _same(hs, alone, b, _tolerance(model)):
                found = packing
                break
    if found is None:
        log.info("%s does not take packed rows (block-diagonal masks and position ids): batches are padded",
                 type(model).__name__)
    memo[key] = found
    return found


def _device(model):
    return next(model.parameters()).device


def _tolerance(model) -> float:
    dtype = next(model.parameters()).dtype
    return PACKING_TOLERANCE["float32" if str(dtype) in ("torch.float32", "torch.float64") else "other"]


def _same(packed_hs, alone, batch: Batch, tolerance: float) -> bool:
    if len(packed_hs) != len(alone[0]):
        return False
    for layer, h in enumerate(packed_hs):
        flat = h.float().reshape(-1, h.shape[-1])
        for start, piece, ref in zip(batch.starts, batch.pieces, alone):
            diff = flat[start:start + piece[0]] - ref[layer]
            if not bool((diff.norm() <= tolerance * (ref[layer].norm() + 1e-6)).item()):
                return False
    return True
