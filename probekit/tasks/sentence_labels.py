"""Sentence-level label functions (SentEval-style tasks derived from UD annotation).

Each function maps one :class:`~probekit.data.Sentence` to one label, or ``None`` when the
label is undefined for that sentence (the sentence is then left out of the task). The exact
rules are repeated in the ``rule:`` field of ``tasks/<name>.yaml``; change both together and
bump the YAML ``version`` whenever a rule changes.

The functions only read the UD columns (UPOS, FEATS, HEAD, DEPREL), so they work the same on
gold treebank sentences and on silver sentences from :mod:`probekit.data.annotate`.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Sequence

from probekit.data.conllu_io import Sentence
from probekit.errors import TaskError
from probekit.tasks.base import register_label_fn

#: Relations by which a function word carrying the clause's finiteness hangs off the predicate.
FINITE_CARRIER_RELS = {"aux", "aux:pass", "cop"}
SUBJECT_RELS = {"nsubj", "nsubj:pass"}
PASSIVE_DEP_RELS = {"aux:pass", "nsubj:pass", "csubj:pass", "obl:agent"}
TENSES = ("Past", "Pres")
NUMBERS = ("Sing", "Plur")
#: Default upper bin edges (inclusive) of ``sentence_length``: 1-4, 5-8, 9-13, 14-19, 20-27, 28+.
#: Chosen so that the six bins are roughly balanced on UD EWT train (2005/1730/2310/2393/2145/1961).
DEFAULT_LENGTH_EDGES = (4, 8, 13, 19, 27)


def finite_word(s: Sentence) -> int | None:
    """0-based index of the finite verb form of the main clause, or None.

    Candidates are the root and its ``aux``, ``aux:pass`` and ``cop`` dependents; the first one
    in word order with ``VerbForm=Fin`` is returned ("has been eaten" -> "has"; "She was happy"
    -> "was"; "He left" -> "left").
    """
    r = s.root()
    if r is None:
        return None
    cands = sorted([r] + [j for j in s.children(r) if s.deprels[j] in FINITE_CARRIER_RELS])
    for j in cands:
        if s.feats[j].get("VerbForm") == "Fin":
            return j
    return None


@register_label_fn("tense", needs=("syntax",))
def tense(s: Sentence) -> str | None:
    """``Past`` or ``Pres``: the Tense feature of the main clause's finite verb form.

    The finite form is found by :func:`finite_word` (root, or its finite aux/cop). Undefined
    (None) when there is no finite form (fragments, "To be continued", bare participles) or the
    finite form has no Tense feature: modals ("will go", "can go", "would have gone": UD gives
    modals VerbForm=Fin but no Tense) and imperatives ("Go home!", Mood=Imp without Tense).
    """
    j = finite_word(s)
    if j is None:
        return None
    t = s.feats[j].get("Tense")
    return t if t in TENSES else None


def root_subject(s: Sentence) -> int | None:
    """0-based index of the first nsubj / nsubj:pass dependent of the root, or None."""
    r = s.root()
    if r is None:
        return None
    for j in s.children(r):
        if s.deprels[j] in SUBJECT_RELS:
            return j
    return None


@register_label_fn("subject_number", needs=("syntax",))
def subject_number(s: Sentence) -> str | None:
    """``Sing`` or ``Plur``: the Number feature of the head word of the root's subject.

    Subject = first dependent of the root with deprel nsubj or nsubj:pass (nsubj:outer and
    clausal subjects are not used). Undefined (None) when the root has no such subject or the
    subject word has no Number feature (e.g. "you", "who", numerals, most clausal material).
    As in SentEval's SubjNum, only the head word counts: "John and Mary" is Sing (John).
    """
    j = root_subject(s)
    if j is None:
        return None
    n = s.feats[j].get("Number")
    return n if n in NUMBERS else None


@register_label_fn("voice", needs=("syntax",))
def voice(s: Sentence) -> str | None:
    """``passive`` or ``active`` voice of the main clause.

    passive = the root has an aux:pass, nsubj:pass, csubj:pass or obl:agent dependent, or the
    root itself has Voice=Pass (e.g. headline passives "Man arrested"); active = otherwise, when the root
    has UPOS VERB. Undefined (None) for any other root: copular and nominal predicates ("She is
    happy", root ADJ), fragments ("Thanks!"), roots that are AUX in elliptical clauses.
    """
    r = s.root()
    if r is None:
        return None
    if s.feats[r].get("Voice") == "Pass" or any(s.deprels[j] in PASSIVE_DEP_RELS for j in s.children(r)):
        return "passive"
    if s.upos[r] == "VERB":
        return "active"
    return None


def length_labels(edges: Sequence[int] = DEFAULT_LENGTH_EDGES) -> list[str]:
    """Label names for the bins given by inclusive upper ``edges``: (4, 8) -> ['01-04', '05-08', '09+']."""
    edges = [int(e) for e in edges]
    if not edges or edges[0] < 1 or any(b <= a for a, b in zip(edges, edges[1:])):
        raise TaskError(f"sentence_length: bin edges must be increasing positive integers, got {edges}. "
                        "Example: params: {edges: [4, 8, 13, 19, 27]}.")
    labels, lo = [], 1
    for hi in edges:
        labels.append(f"{lo:02d}-{hi:02d}")
        lo = hi + 1
    labels.append(f"{lo:02d}+")
    return labels


@lru_cache(maxsize=32)
def _cached_length_labels(edges: tuple) -> list[str]:
    return length_labels(edges)


@register_label_fn("sentence_length")
def sentence_length(s: Sentence, edges: Sequence[int] = DEFAULT_LENGTH_EDGES) -> str | None:
    """Binned number of syntactic words (punctuation included; a multiword token such as "don't"
    counts as its two words). Bins are given by inclusive upper ``edges``; see :func:`length_labels`.
    Undefined (None) only for a sentence with no words."""
    n = len(s.words)
    if n == 0:
        return None
    edges = tuple(edges)
    labels = _cached_length_labels(edges)
    for k, hi in enumerate(edges):
        if n <= hi:
            return labels[k]
    return labels[-1]
