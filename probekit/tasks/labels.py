"""Word-level label functions for the built-in tasks (rules documented in ``tasks/*.yaml``)."""
from __future__ import annotations

from probekit.data.conllu_io import Sentence
from probekit.tasks.base import register_label_fn

SUBJECT_RELS = {"nsubj", "nsubj:pass"}
OBJECT_RELS = {"obj", "iobj"}
#: Base relations (before any ':subtype') by which a VERB heads a clause.
CLAUSE_HEAD_RELS = {"root", "ccomp", "xcomp", "advcl", "acl", "csubj", "parataxis", "conj", "list"}


def _base(rel: str) -> str:
    return rel.split(":", 1)[0]


@register_label_fn("upos")
def upos(s: Sentence) -> list[str]:
    return list(s.upos)


@register_label_fn("aux_verb")
def aux_verb(s: Sentence) -> list[str]:
    return ["aux" if u == "AUX" else "not_aux" for u in s.upos]


@register_label_fn("subject")
def subject(s: Sentence) -> list[str]:
    """nsubj or nsubj:pass. nsubj:outer (the outer subject of a copular clause whose predicate
    is itself a clause, 'The problem is that...') is *not* a subject here: it is the topic
    of a predicate clause that has its own subject."""
    return ["subj" if r in SUBJECT_RELS else "not_subj" for r in s.deprels]


def is_main_verb(s: Sentence, i: int) -> bool:
    """A main verb is a word with UPOS VERB that heads a clause: its relation to its head (base
    relation, subtype ignored) is one of root, ccomp, xcomp, advcl, acl (incl. acl:relcl), csubj
    (incl. csubj:pass), parataxis, conj or list. Verbs used as modifiers (amod 'retiring jurists'),
    nominals (obl, nmod, compound) and the like are not main verbs."""
    if s.upos[i] != "VERB":
        return False
    rel = _base(s.deprels[i])
    if rel == "conj":
        # a conjunct heads a clause only when the word it is conjoined to is itself a clause head
        h = s.heads[i] - 1
        return h >= 0 and (s.upos[h] != "VERB" or is_main_verb(s, h) or _base(s.deprels[h]) in CLAUSE_HEAD_RELS)
    return rel in CLAUSE_HEAD_RELS


@register_label_fn("syntactic_role")
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
