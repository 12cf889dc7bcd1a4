"""Word-level label functions for the built-in tasks (rules documented in ``tasks/*.yaml``)."""
from __future__ import annotations

from probekit.data.conllu_io import Sentence
from probekit.tasks.base import register_label_fn

SUBJECT_RELS = {"nsubj", "nsubj:pass"}
OBJECT_RELS = {"obj", "iobj"}
#: Base relations (before any ':subtype') by which a VERB heads a clause (conj: when its first conjunct does).
CLAUSE_HEAD_RELS = {"root", "ccomp", "xcomp", "advcl", "acl", "csubj", "parataxis", "conj", "list"}


def _base(rel: str) -> str:
    return rel.split(":", 1)[0]


@register_label_fn("upos", needs=("upos",))
def upos(s: Sentence) -> list[str]:
    return list(s.upos)


@register_label_fn("aux_verb", needs=("upos",))
def aux_verb(s: Sentence) -> list[str]:
    return ["aux" if u == "AUX" else "not_aux" for u in s.upos]


@register_label_fn("subject", needs=("syntax",))
def subject(s: Sentence) -> list[str]:
    """nsubj or nsubj:pass. nsubj:outer (the outer subject of a copular clause whose predicate
    is itself a clause, 'The problem is that...') is *not* a subject here: it is the topic
    of a predicate clause that has its own subject."""
    return ["subj" if r in SUBJECT_RELS else "not_subj" for r in s.deprels]


def is_main_verb(s: Sentence, i: int) -> bool:
    """A main verb is a word with UPOS VERB that heads a clause: its relation to its head (base
    relation, subtype ignored) is one of root, ccomp, xcomp, advcl, acl (incl. acl:relcl), csubj
    (incl. csubj:pass), parataxis or list, or conj when the first conjunct of its chain has one of those
    relations (a conjunct of an amod is an amod too). Verbs used as modifiers (amod 'retiring jurists'),
    nominals (obl, nmod, compound) and the like are not main verbs."""
    if s.upos[i] != "VERB":
        return False
    rel = _base(s.deprels[i])
    # A conjunct heads a clause only when the first conjunct of its chain does, whatever that word's part of
    # speech ("is tall and runs": runs is a main verb, conjoined to the copular root tall; "a weak and failed
    # state": failed is other, conjoined to the amod weak). The walk is bounded: the reader rejects cycles, but
    # sentences can also be built in code.
    j, steps = i, 0
    while rel == "conj" and steps <= len(s):
        j = s.heads[j] - 1
        if j < 0:
            return False
        rel, steps = _base(s.deprels[j]), steps + 1
    return rel in CLAUSE_HEAD_RELS - {"conj"}


@register_label_fn("syntactic_role", needs=("upos", "syntax"))
def syntactic_role(s: Sentence) -> list[str]:
    """subject / auxiliary / main_verb / object / other, first matching rule wins:
    subject = nsubj|nsubj:pass; object = obj|iobj; auxiliary = UPOS AUX (aux, aux:pass, cop);
    main_verb = see :func:`is_main_verb`; everything else = other."""
    out = []
    for i, rel in enumerate(s.deprels):
        if rel in SUBJECT_RELS:
            out.append("subject")
        elif rel in OBJECT_RELS:
            out.append("object")
        elif s.upos[i] == "AUX":
            out.append("auxiliary")
        elif is_main_verb(s, i):
            out.append("main_verb")
        else:
            out.append("other")
    return out
