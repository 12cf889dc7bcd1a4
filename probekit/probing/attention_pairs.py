"""Attention weights as pair features (attention-as-structure, Clark et al. 2019, "What does BERT look at?").

A word pair (i, j) is represented by the word-level attention between the two words
(:mod:`probekit.activations.attention`) in every chosen layer and head, both directions:
``f(i, j) = [alpha^{l,h}_{i->j}, alpha^{l,h}_{j->i}]`` over layers l and heads h (``2 * layers * heads`` numbers).

* ``dep_arc`` (:func:`fit_attention_arcs`): Clark et al.'s attention-only probe, a linear combination of the
  attention maps and their transposes, ``p(j | i) = softmax_j(w . f(i, j))`` over the candidate heads j of word i.
  probekit's ``dep_arc`` lets the root word choose itself; that candidate stands for Clark et al.'s ROOT and is
  scored from the word's attention to the other tokens (the special tokens, and subwords of no word) and
  theirs to it (``f(i, i) = [alpha_{i->other},
  alpha_{other->i}]``; Clark et al. use the attention to ``[CLS]`` and ``[SEP]`` with two learned scalars).
  The probe is a convex conditional-logit model: fitted to its optimum by full-batch L-BFGS with an L2 penalty
  ``||w||^2 / (2 C N)`` (N scored words; C from the experiment's ``Cs``, chosen by dev UAS), on features scaled
  to unit variance on train.
* pair classification (``dep_label``, ``subject_of``): ``f(a, b)`` with the linear probe of every probekit run
  (:func:`attention_pair_features`; the runner fits it with :func:`probekit.probing.linear.fit_layers`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from probekit._device import probe_threads, resolve_device
from probekit.activations.attention import WordAttention
from probekit.errors import DataError
from probekit.probing.pairs import ArcTargets
from probekit.tasks.base import RelationItems

#: The ``site`` of attention-feature rows in a results table: the attention pattern (TransformerLens's
#: ``hook_pattern``).
ATTENTION_SITE = "attn_pattern"
#: The ``pooling`` of attention-feature rows: subwords to words as Clark et al. (the attention to a word is the sum over
#: its subwords, the attention from it the mean of its subwords' rows).
ATTENTION_POOLING = "sum_to_mean_from"
#: L-BFGS iterations per fit (the problem is convex and small: it converges well before on EWT slices).
MAX_ITER = 200


def _check(att: Sequence[WordAttention], offsets: np.ndarray) -> None:
    lengths = np.diff(offsets)
    if len(att) != len(lengths) or any(a.n_words != n for a, n in zip(att, lengths)):
        raise DataError("attention features: the word-level attention does not match the task's sentences "
                        f"({len(att)} sentences of attention for {len(lengths)}); compute it on the same split.")


def attention_pair_features(att: Sequence[WordAttention], items: RelationItems, layers: Sequence[int]) -> np.ndarray:
    """``[pairs, len(layers) * heads * 2]`` float32 features ``f(a, b)`` of a pair task's items; ``layers`` index the
    blocks of ``att`` (0 = block 1)."""
    _check(att, items.offsets)
    if len(items.y) == 0:
        raise DataError("attention pair features: the split has no pairs (one-word sentences only?).")
    lay = list(layers)
    out = np.empty((len(items.y), len(lay), att[0].maps.shape[1], 2), dtype=np.float32)
    for k, (s, i, j) in enumerate(zip(items.sentence, items.a, items.b)):
        m = att[s].maps
        out[k, :, :, 0] = m[lay, :, i, j]
        out[k, :, :, 1] = m[lay, :, j, i]
    return out.reshape(len(items.y), -1)


@dataclass
class ArcCandidates:
    """Every (word, candidate head) pair of a split: ``X [pairs, blocks, heads, 2]`` features, ``word [pairs]`` the
    word's row (its sentence's words in order), ``cand [pairs]`` the candidate's index in its sentence, and per word
    ``gold [words]`` the row in ``X`` of its gold head (-1: not scored)."""

    X: np.ndarray
    word: np.ndarray
    cand: np.ndarray
    gold: np.ndarray

    @property
    def n_words(self) -> int:
        return len(self.gold)


def arc_candidates(att: Sequence[WordAttention], targets: ArcTargets) -> ArcCandidates:
    """:class:`ArcCandidates` of a split: for word i, candidate j != i has ``f(i, j)``; candidate i (the root's
    self-choice, Clark et al.'s ROOT) has the attention to / from the other tokens (special tokens, subwords of no
    word)."""
    _check(att, targets.offsets)
    lengths = targets.lengths
    n_pairs = int((lengths ** 2).sum())
    L, H = att[0].maps.shape[:2]
    X = np.empty((n_pairs, L, H, 2), dtype=np.float32)
    word = np.empty(n_pairs, dtype=np.int64)
    cand = np.empty(n_pairs, dtype=np.int64)
    gold = np.full(int(targets.offsets[-1]), -1, dtype=np.int64)
    p = 0
    for s, (a, n) in enumerate(zip(att, lengths)):
        m = a.maps  # [L, H, n, n]
        blk = np.stack([m, m.transpose(0, 1, 3, 2)], -1)  # [L, H, i, j, 2]: i->j, j->i
        idx = np.arange(n)
        blk[:, :, idx, idx, 0] = a.to_other
        blk[:, :, idx, idx, 1] = a.from_other
        X[p:p + n * n] = blk.transpose(2, 3, 0, 1, 4).reshape(n * n, L, H, 2)
        w0 = int(targets.offsets[s])
        word[p:p + n * n] = w0 + np.repeat(idx, n)
        cand[p:p + n * n] = np.tile(idx, n)
        h = targets.heads[s]
        gold[w0:w0 + n] = np.where(h >= 0, p + idx * n + np.maximum(h, 0), -1)
        p += n * n
    return ArcCandidates(X=X, word=word, cand=cand, gold=gold)


def _take(c: ArcCandidates, layers: Sequence[int]) -> np.ndarray:
    return np.ascontiguousarray(c.X[:, list(layers)].reshape(len(c.X), -1))


def _scores(X, word, n_words: int, v):
    """Per word: log-normaliser over its candidates, and every candidate's score ``[pairs]`` (float64; ``X`` may be
    float32)."""
    import torch

    s = (X @ v.to(X.dtype)).double()
    top = torch.full((n_words,), -torch.inf, dtype=s.dtype, device=s.device).scatter_reduce(
        0, word, s.detach(), reduce="amax")
    z = torch.zeros(n_words, dtype=s.dtype, device=s.device).index_add_(0, word, torch.exp(s - top[word]))
    return torch.log(z) + top, s


def fit_attention_arcs(train: ArcCandidates, dev: ArcCandidates, test: ArcCandidates, *,
                       layer_sets: Sequence[Sequence[int]], Cs: Sequence[float] = (0.01, 0.1, 1.0),
                       device: str | None = None) -> list[dict]:
    """Clark et al.'s attention-only head probe (module docstring) on each of ``layer_sets`` (lists of block
    indices of the candidates' ``X``): per set ``{"pred": [test words] predicted head (index in its sentence),
    "C": the chosen C, "n_params": number of weights, "dev_uas": ...}``."""
    import torch

    for name, c in (("train", train), ("dev", dev), ("test", test)):
        if not (c.gold >= 0).any():
            raise DataError(f"dep_arc attention probe: the {name} split has no scored words.")
    dev_name = resolve_device(device)
    out = []
    for layers in layer_sets:
        Xtr = _take(train, layers)
        with probe_threads(Xtr.size, dev_name):
            scale = Xtr.std(0)
            scale[scale < 1e-6] = 1.0  # a constant feature (e.g. a decoder's zero upper triangle) gets no weight
            t = lambda a: torch.as_tensor(a, device=dev_name)  # noqa: E731
            inv = t(1.0 / scale).double()
            data = {}
            for role, c, X in (("train", train, Xtr), ("dev", dev, None), ("test", test, None)):
                X = _take(c, layers) if X is None else X
                data[role] = (t(X), t(c.word), c.n_words, c.gold)  # float32: the scores are summed in float64
            Xt, wt, nt, gt = data["train"]
            keep = np.flatnonzero(gt >= 0)
            keep_t, gold_t = t(keep), t(gt[keep])
            v = torch.zeros(Xt.shape[1], dtype=torch.float64, device=dev_name, requires_grad=True)
            best: tuple | None = None
            for C in sorted(Cs):
                opt = torch.optim.LBFGS([v], lr=1.0, max_iter=MAX_ITER, tolerance_grad=1e-7, tolerance_change=1e-10,
                                        history_size=20, line_search_fn="strong_wolfe")

                def closure():
                    opt.zero_grad()
                    lse, s = _scores(Xt, wt, nt, v * inv)
                    loss = (lse[keep_t] - s[gold_t]).mean() + (v * v).sum() / (2 * C * len(keep))
                    loss.backward()
                    return loss

                opt.step(closure)
                with torch.no_grad():
                    uas = _uas(data["dev"], v * inv, dev_name)
                if best is None or uas > best[0]:
                    best = (uas, C, (v * inv).detach().clone())
            assert best is not None  # Cs is not empty
            uas, C, w = best
            with torch.no_grad():
                pred = test.cand[_best_rows(data["test"], w, dev_name)]
        out.append({"pred": pred, "C": float(C), "n_params": int(len(w)), "dev_uas": float(uas)})
    return out


def _best_rows(data, w, device: str) -> np.ndarray:
    """Per word, the row (in the split's candidates) of its highest-scoring candidate; a tie goes to the first."""
    import torch

    X, word, n_words, _ = data
    s = X @ w.to(X.dtype)
    top = torch.full((n_words,), -torch.inf, dtype=s.dtype, device=device).scatter_reduce(0, word, s, reduce="amax")
    rows = np.flatnonzero((s == top[word]).cpu().numpy())[::-1]  # written last = the first candidate
    best = np.full(n_words, -1, dtype=np.int64)
    best[word.cpu().numpy()[rows]] = rows
    return best


def _uas(data, w, device: str) -> float:
    gold = data[3]
    scored = gold >= 0
    return float((_best_rows(data, w, device)[scored] == gold[scored]).mean())
