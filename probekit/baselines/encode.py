"""Turn sentences into model inputs with word-level labels, the same way the probes see words.

Each sentence is tokenized once through :func:`probekit.activations.align.align_batch` (character offsets,
no per-word tokenization). A word's label sits on one of its subwords — the first for encoders,
the last for decoders (:attr:`LoadedModel.default_word_pooling`) — and every other position gets
the ignore label ``-100``. The tokenizer's special tokens are added with
:func:`probekit.activations.align.special_layout`.

A sentence longer than the model allows is never truncated: it is split into overlapping windows
(:func:`probekit.activations.align.plan_windows`) and each word is read from exactly one window (the one
where its labelled subword has the most context), so every labelled word is trained on and scored
exactly once.

Soft-prompt ("virtual") tokens shift the sequence the model returns: the helpers
:func:`insert_virtual` and :func:`drop_virtual` give those positions the ignore label for the loss
and remove them from the predictions.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from probekit.activations.align import align_batch, plan_windows, special_layout
from probekit.data.conllu_io import Sentence
from probekit.errors import ConfigError, TaskError

log = logging.getLogger(__name__)

IGNORE = -100


@dataclass
class Segment:
    """One model input: a sentence, or one window of a long sentence.

    Attributes:
        input_ids: ``[seq]`` token ids with the special tokens.
        labels: ``[seq]`` class ids at labelled positions, ``-100`` elsewhere (the training target).
        words: ``(sentence index, word index)`` of every labelled word, in position order.
        positions: the position of each word's labelled subword (same order as ``words``). Two words can share
            one: a word that the tokenizer drops entirely (a zero-width space, a lone combining mark) borrows its
            neighbour's subword, as the probes read it. Such a position trains on the first word's label, and
            both words are scored from it.
        word_labels: each word's class id (same order as ``words``).
    """

    input_ids: list[int]
    labels: list[int]
    words: list[tuple[int, int]]
    positions: list[int]
    word_labels: list[int]

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass
class EncodedSplit:
    """A split ready for training or scoring.

    ``n_words`` counts labelled words (words whose task label is not ``None``), ``n_windowed`` the
    sentences that had to be split into windows.
    """

    segments: list[Segment]
    n_sentences: int
    n_words: int
    n_windowed: int


def encode_split(sentences: Sequence[Sentence], task, tokenizer, *, pooling: str, max_length: int,
                 prepend_bos: bool = False, reserve: int = 0, causal: bool = False,
                 split_name: str = "") -> EncodedSplit:
    """Build segments for a word-level task.

    Args:
        sentences: the split.
        task: a word-level :class:`probekit.tasks.Task`.
        tokenizer: the model's fast tokenizer.
        pooling: ``first`` or ``last`` — which subword of a word carries its label.
        max_length: the longest input in tokens, specials and ``reserve`` included.
        prepend_bos: passed to :func:`special_layout`.
        reserve: positions taken by soft-prompt tokens (kept free in every window).
        causal: windows for a causal decoder (a token is read where it has most left context).
    """
    if task.level != "word":
        raise TaskError(f"Tuning baselines support word-level tasks only; task {task.name!r} is "
                        f"{task.level}-level.")
    if pooling not in ("first", "last"):
        raise ConfigError(f"Baseline word pooling must be 'first' or 'last', got {pooling!r}.")
    prefix, suffix = special_layout(tokenizer, prepend_bos=prepend_bos)
    max_content = max_length - len(prefix) - len(suffix) - reserve
    if max_content < 2:
        raise ConfigError(f"max_length {max_length} leaves {max_content} content tokens after {len(prefix)} + "
                          f"{len(suffix)} special tokens and {reserve} soft-prompt tokens; raise max_length or "
                          "lower prompt_length.")
    labels = task.encode(sentences)
    aligned = align_batch(tokenizer, sentences)
    segments: list[Segment] = []
    pos = 0
    n_words = n_windowed = 0
    for si, (sent, al) in enumerate(zip(sentences, aligned)):
        labs = labels[pos:pos + len(sent)]
        pos += len(sent)
        # the labelled subword of every labelled word
        targets = [(wi, (al.heads[wi] if pooling == "first" else al.word_tokens[wi][-1]), int(lab))
                   for wi, lab in enumerate(labs) if lab >= 0]
        n_words += len(targets)
        if not targets:
            continue
        windows, owner = plan_windows(al.n_tokens, max_content, causal=causal)
        if len(windows) > 1:
            n_windowed += 1
        for k, (a, b) in enumerate(windows):
            ids = list(prefix) + list(al.token_ids[a:b]) + list(suffix)
            seg_labels = [IGNORE] * len(ids)
            words, positions, word_labels = [], [], []
            for wi, t, lab in targets:  # targets are in token order, so positions come out sorted
                if owner[t] == k:
                    at = len(prefix) + t - a
                    if seg_labels[at] == IGNORE:
                        seg_labels[at] = lab
                    words.append((si, wi))
                    positions.append(at)
                    word_labels.append(lab)
            if words:
                segments.append(Segment(ids, seg_labels, words, positions, word_labels))
    if n_windowed:
        log.info("%s: %d of %d sentences are longer than %d content tokens and were split into overlapping windows "
                 "(not truncated).", split_name or "split", n_windowed, len(sentences), max_content)
    return EncodedSplit(segments=segments, n_sentences=len(sentences), n_words=n_words, n_windowed=n_windowed)


def length_batches(lengths: Sequence[int], batch_size: int, *, rng: np.random.Generator | None = None) -> list[list[int]]:
    """Group items of similar length into batches (less padding); with ``rng`` the batch order and the
    order among equal lengths are shuffled (training), without it batches come in length order (prediction)."""
    idx = np.arange(len(lengths))
    if rng is not None:
        idx = rng.permutation(len(lengths))
    order = sorted(idx.tolist(), key=lambda i: lengths[i])  # stable: keeps the shuffled order among equal lengths
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if rng is not None:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def collate(segments: Sequence[Segment], pad_id: int):
    """Right-pad a batch: returns ``input_ids [batch, seq]``, ``attention_mask [batch, seq]``, ``labels [batch, seq]``."""
    import torch

    n = max(len(s) for s in segments)
    ids = torch.full((len(segments), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(segments), n), dtype=torch.long)
    labels = torch.full((len(segments), n), IGNORE, dtype=torch.long)
    for i, s in enumerate(segments):
        ids[i, :len(s)] = torch.tensor(s.input_ids)
        mask[i, :len(s)] = 1
        labels[i, :len(s)] = torch.tensor(s.labels)
    return ids, mask, labels


def insert_virtual(x, n_virtual: int, at: int, fill):
    """Insert ``n_virtual`` columns filled with ``fill`` at position ``at`` of ``x [batch, seq, ...]``.

    Used to give soft-prompt positions the ignore label (``fill=-100``) or to extend an attention
    mask (``fill=1``): the result is ``[batch, seq + n_virtual, ...]``.
    """
    import torch

    if n_virtual == 0:
        return x
    shape = (x.shape[0], n_virtual) + tuple(x.shape[2:])
    pad = torch.full(shape, fill, dtype=x.dtype, device=x.device)
    return torch.cat([x[:, :at], pad, x[:, at:]], dim=1)


def drop_virtual(x, n_virtual: int, at: int):
    """Remove the ``n_virtual`` soft-prompt positions starting at ``at`` from ``x [batch, seq + n_virtual, ...]``."""
    import torch

    if n_virtual == 0:
        return x
    return torch.cat([x[:, :at], x[:, at + n_virtual:]], dim=1)
