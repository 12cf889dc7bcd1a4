"""Subword ↔ word alignment through character offsets.

The model sees each sentence as natural text (UD's ``# text`` line). The fast tokenizer is run
once on that text with ``return_offsets_mapping=True`` and every subword is given to the word
whose character span contains the subword's first non-space character. A subword can straddle a
word boundary (WordPiece splits "didn't" into ``didn ' t`` while UD's words are ``did`` + ``n't``);
such a subword then goes to the word it shares the most characters with (``didn`` to ``did``, 3 of
its 4 characters), unless that would leave the other word without any subword. Words are never
tokenized one by one: for byte-level BPE (GPT-2, Llama-3, SmolLM2) that would produce tokens
the model never saw in pretraining (no leading-space ``Ġ`` variants).

Guarantees (tested, including property-based tests):

* every word gets at least one subword;
* ``first`` pooling reads the word's first subword that carries one of its letters or digits
  (:attr:`AlignedSentence.heads`), not a leading punctuation-only subword: the contractions ``'s``,
  ``n't``, ``'m``, ``'ve``, ``'ll``, ``'re``, ``'d`` would otherwise all take the vector of one
  apostrophe token. A word with no letter or digit (``--``) reads its first subword;
* no subword belongs to two words, so no two words merge. Where a tokenizer would put the
  end of one syntactic word and the start of the next in one subword (multiword tokens such as
  ``cannot`` = ``can`` + ``not`` in a BPE vocabulary), a single space is inserted at that word
  boundary and the sentence is tokenized again; the number of such repairs is counted;
* a word made only of characters the tokenizer drops (a lone zero-width joiner, say) borrows the
  nearest subword and is counted as ``borrowed``.

Shapes: ``hidden`` arrays are ``[layer, token, d_model]``; word vectors ``[layer, word, d_model]``.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from probekit.data.conllu_io import Sentence
from probekit.errors import ModelError, unknown_name

log = logging.getLogger(__name__)

WORD_POOLINGS = ("first", "last", "mean")
SENTENCE_POOLINGS = ("cls", "mean", "last")


@dataclass
class AlignedSentence:
    """A sentence tokenized once, with each word's subwords.

    ``token_ids`` are the content subwords (no special tokens); ``word_tokens[i]`` lists indices
    into ``token_ids`` for word ``i``, in order; ``heads[i]`` is the one ``first`` pooling reads.
    """

    text: str
    token_ids: list[int]
    offsets: list[tuple[int, int]]
    word_tokens: list[list[int]]
    repaired: int = 0
    borrowed: int = 0
    spans: list[tuple[int, int]] = field(default_factory=list)
    heads: list[int] = field(default_factory=list)

    @property
    def n_tokens(self) -> int:
        return len(self.token_ids)


def check_fast_tokenizer(tokenizer) -> None:
    """Raise a clear error for a slow (pure-Python) tokenizer, which cannot give character offsets."""
    if not getattr(tokenizer, "is_fast", False):
        raise ModelError(
            f"The tokenizer {type(tokenizer).__name__} is a slow (Python) tokenizer, which gives no character "
            "offsets, so probekit cannot align subwords to words. Load the fast tokenizer instead "
            "(AutoTokenizer.from_pretrained(..., use_fast=True)); if the model has none, convert it with "
            "`tokenizers`/`transformers.convert_slow_tokenizer`.")


def _assign(text: str, spans: Sequence[tuple[int, int]], offsets: Sequence[tuple[int, int]]):
    """Give each token to the word holding its first non-space character.

    Returns (word_tokens, orphans) where orphans are words that received no token, each with the
    index of a token that overlaps it (or -1 when no token overlaps it at all).
    """
    char_word = [-1] * (len(text) + 1)  # a list: Python indexes it without making numpy scalars
    for w, (a, b) in enumerate(spans):
        char_word[a:b] = [w] * (b - a)
    word_tokens: list[list[int]] = [[] for _ in spans]
    for t, (a, b) in enumerate(offsets):
        s = a
        while s < b and text[s].isspace():
            s += 1
        if s >= b:
            if a == b:
                continue
            s = a
        w = char_word[s]
        if w < 0:
            # a token starting outside every word (stray whitespace): give it to the next word it overlaps
            ws = [char_word[c] for c in range(s, b) if char_word[c] >= 0]
            if not ws:
                continue
            w = ws[0]
        word_tokens[w].append(t)
    orphans = []
    for w, toks in enumerate(word_tokens):
        if toks:
            continue
        a, b = spans[w]
        over = [t for t, (x, y) in enumerate(offsets) if x < b and y > a]
        orphans.append((w, over[0] if over else -1))
    return word_tokens, orphans


def _tokenize(tokenizer, texts: list[str]):
    enc = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True, return_attention_mask=False,
                    return_token_type_ids=False, verbose=False)
    return enc["input_ids"], enc["offset_mapping"]


def align_sentence(tokenizer, sentence: Sentence, *, _pre=None, max_repairs: int = 8) -> AlignedSentence:
    """Tokenize a sentence's text once and map subwords to words (see module docstring)."""
    text, spans = sentence.text, list(sentence.spans)
    if _pre is None:
        ids_l, off_l = _tokenize(tokenizer, [text])
        ids, offs = ids_l[0], off_l[0]
    else:
        ids, offs = _pre
    repaired = 0
    while True:
        word_tokens, orphans = _assign(text, spans, offs)
        merges = [w for w, t in orphans if t >= 0]
        if not merges or repaired >= max_repairs:
            break
        # insert a space before each orphan word whose characters were swallowed by a neighbour's subword
        for w in sorted(merges, reverse=True):
            a = spans[w][0]
            text = text[:a] + " " + text[a:]
            spans = [(x + 1, y + 1) if x >= a else (x, y) for (x, y) in spans]
            repaired += 1
        ids_l, off_l = _tokenize(tokenizer, [text])
        ids, offs = ids_l[0], off_l[0]
    _by_overlap(text, spans, offs, word_tokens)
    borrowed = 0
    for w, t in orphans:
        if t < 0:
            # nothing overlaps: borrow the nearest token to the left (else to the right)
            left = [x for x in range(len(offs)) if offs[x][1] <= spans[w][0]]
            t = left[-1] if left else (0 if offs else -1)
        if t < 0:
            raise ModelError(f"The tokenizer produced no subwords at all for sentence {sentence.sent_id!r} "
                             f"({sentence.text[:60]!r}); cannot represent its words.")
        word_tokens[w] = [t]
        borrowed += 1
    return AlignedSentence(text=text, token_ids=list(ids), offsets=[tuple(o) for o in offs], word_tokens=word_tokens,
                           repaired=repaired, borrowed=borrowed, spans=spans,
                           heads=_heads(text, spans, offs, word_tokens))


def _by_overlap(text: str, spans, offsets, word_tokens) -> None:
    """Move each subword that straddles a word boundary to the word it shares the most characters with (ties: the
    word it starts in), in place, where the word it leaves keeps another subword."""
    owner = {t: w for w, toks in enumerate(word_tokens) for t in toks}
    for t, w in owner.items():
        x, y = offsets[t]
        if y - x < 2 or (spans[w][0] <= x and y <= spans[w][1]):  # inside its word: straddles nothing
            continue
        share = [(min(b, y) - max(a, x), -v) for v, (a, b) in enumerate(spans) if a < y and b > x and v != w]
        if not share or len(word_tokens[w]) < 2:
            continue
        a, b = spans[w]
        n, v = max(share)
        if n > min(b, y) - max(a, x):
            word_tokens[w].remove(t)
            word_tokens[-v].append(t)
            word_tokens[-v].sort()


def _heads(text: str, spans, offsets, word_tokens) -> list[int]:
    """Per word, its first subword whose characters inside the word include a letter or digit (else its first)."""
    heads = []
    for (a, b), toks in zip(spans, word_tokens):
        head = toks[0]
        for t in toks:
            x, y = offsets[t]
            if _ALNUM.search(text, max(a, x), min(b, y)):
                head = t
                break
        heads.append(head)
    return heads


#: one character for which ``str.isalnum()`` holds: ``\w`` is exactly those plus the underscore (Python's re docs)
_ALNUM = re.compile(r"[^\W_]")


def align_batch(tokenizer, sentences: Sequence[Sentence], *, chunk: int = 2048) -> list[AlignedSentence]:
    """Align many sentences, calling the (Rust) tokenizer on chunks of texts at once."""
    check_fast_tokenizer(tokenizer)
    out: list[AlignedSentence] = []
    for i in range(0, len(sentences), chunk):
        part = sentences[i:i + chunk]
        ids_l, off_l = _tokenize(tokenizer, [s.text for s in part])
        out.extend(align_sentence(tokenizer, s, _pre=(ids, offs)) for s, ids, offs in zip(part, ids_l, off_l))
    return out


# --------------------------------------------------------------------------------------------- windows

def plan_windows(n_tokens: int, max_content: int, *, causal: bool = False) -> tuple[list[tuple[int, int]], np.ndarray]:
    """Cover ``n_tokens`` content tokens with overlapping windows of at most ``max_content`` tokens.

    Windows advance by half their length. Each token is read from one window: for an encoder the
    window where it is most central (most context on both sides); for a causal decoder the window
    where it has the most left context. Returns (windows as [start, end) token ranges, owner window
    of every token).
    """
    if max_content < 2:
        raise ValueError(f"max_content must be >= 2, got {max_content}")
    if n_tokens <= max_content:
        return [(0, n_tokens)], np.zeros(n_tokens, dtype=np.int64)
    stride = max(1, max_content // 2)
    starts = list(range(0, n_tokens - max_content, stride)) + [n_tokens - max_content]
    windows = [(s, s + max_content) for s in starts]
    owner = np.empty(n_tokens, dtype=np.int64)
    for t in range(n_tokens):
        best, best_score = 0, -1
        for k, (a, b) in enumerate(windows):
            if not a <= t < b:
                continue
            score = (t - a) if causal else min(t - a, b - 1 - t)
            if score > best_score:
                best, best_score = k, score
        owner[t] = best
    return windows, owner


def special_layout(tokenizer, *, prepend_bos: bool = False) -> tuple[list[int], list[int]]:
    """The special token ids the tokenizer puts before and after a sequence (e.g. [CLS] / [SEP]).

    With ``prepend_bos`` a BOS token is put first when the tokenizer defines one and does not add it. A tokenizer
    without a BOS token (Qwen2's, for one) gets its EOS token there instead, the document separator such models were
    trained with, so that no word sits at position 0 (the attention sink); without either, a warning says so.
    """
    # Ask the tokenizer itself: encode a probe text with and without special tokens and find the
    # content inside (build_inputs_with_special_tokens is not overridden by every fast tokenizer,
    # e.g. Llama-3-style ones whose post-processor adds the BOS).
    probe = "a b"
    content = tokenizer(probe, add_special_tokens=False)["input_ids"]
    full = tokenizer(probe, add_special_tokens=True)["input_ids"]
    k = next((i for i in range(len(full) - len(content) + 1) if full[i:i + len(content)] == content), None)
    if k is None or not content:
        raise ModelError(f"Cannot find where {type(tokenizer).__name__} puts its special tokens ({full}).")
    prefix, suffix = list(full[:k]), list(full[k + len(content):])
    bos = tokenizer.bos_token_id
    if prepend_bos and bos is None and not prefix:
        bos = tokenizer.eos_token_id
        if bos is None:
            log.warning("%s has neither a BOS nor an EOS token: the first word of every sentence sits at position 0",
                        type(tokenizer).__name__)
    if prepend_bos and bos is not None and (not prefix or prefix[0] != bos):
        prefix = [bos] + prefix
    return prefix, suffix


def check_pooling(how: str, *, sentence: bool = False) -> str:
    choices = SENTENCE_POOLINGS if sentence else WORD_POOLINGS
    if how not in choices:
        raise unknown_name("sentence pooling" if sentence else "word pooling", how, choices)
    return how


def pool_words(hidden: np.ndarray, word_tokens: Sequence[Sequence[int]], how: str,
               heads: Sequence[int] | None = None) -> np.ndarray:
    """Pool token vectors into word vectors.

    Args:
        hidden: ``[layer, token, d_model]`` vectors of one sentence's content tokens.
        word_tokens: token indices per word.
        how: ``first``, ``last`` or ``mean``.
        heads: the token ``first`` reads per word (:attr:`AlignedSentence.heads`); None: each word's first token.
    Returns:
        ``[layer, word, d_model]``.
    """
    if how == "first":
        return hidden[:, list(heads) if heads is not None else [t[0] for t in word_tokens]]
    if how == "last":
        return hidden[:, [t[-1] for t in word_tokens]]
    if how == "mean":
        return np.stack([hidden[:, list(t)].mean(axis=1) for t in word_tokens], axis=1)
    raise unknown_name("word pooling", how, WORD_POOLINGS)
