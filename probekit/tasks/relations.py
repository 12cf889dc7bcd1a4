"""Gold relations between the words of a sentence, read from the UD tree (HEAD): tree distances, depths, punctuation.

These are the targets of the structural probes (Hewitt & Manning 2019): the path length between two words in the
undirected dependency tree (the root word has no parent; UD's artificial ROOT node is not a word) and each word's
depth (path length to the root word; the root word has depth 0).

Every function checks that the sentence has a dependency tree (HEAD read, one root, no cycle) and raises
:class:`~probekit.errors.DataError` naming the sentence otherwise.

It also holds the label functions of the relation-level tasks (``tasks/dep_arc.yaml``, ``dep_label.yaml``,
``subject_of.yaml``, ``subject_span.yaml``; the rules are stated there): their items are read from the same tree.
"""
from __future__ import annotations

import numpy as np

from probekit.data.conllu_io import Sentence
from probekit.errors import DataError
from probekit.tasks.base import register_label_fn

#: The punctuation tags the reference code of Hewitt & Manning (john-hewitt/structural-probes) excludes from UUAS
#: and root accuracy (PTB XPOS). A word is punctuation when its XPOS is one of these or its UPOS is PUNCT, so that
#: treebanks without PTB XPOS (most UD treebanks) get the same exclusion.
PTB_PUNCT = frozenset({"''", ",", ".", ":", "``", "-LRB-", "-RRB-"})


def _where(s: Sentence) -> str:
    return f"sentence {s.sent_id!r}" if s.sent_id else f"sentence {s.text[:40]!r}"


def check_tree(s: Sentence) -> np.ndarray:
    """0-based parent of every word (-1 for the root word), after checking that HEAD forms one tree.

    Raises:
        DataError: the sentence was read without HEAD, has no or several roots, a HEAD out of range, or a cycle.
    """
    if not s.has_syntax:
        raise DataError(f"{_where(s)} has no dependency tree (HEAD is '_'): structural probes need a treebank with "
                        "gold HEAD and DEPREL columns (UD EWT, PUD, or a parsed CoNLL-U file).")
    n = len(s.heads)
    heads = np.asarray(s.heads, dtype=np.int64)
    bad = np.flatnonzero((heads < 0) | (heads > n))
    if bad.size:
        raise DataError(f"{_where(s)}: word {bad[0] + 1} has HEAD {heads[bad[0]]}, outside 0..{n}; fix the file.")
    roots = np.flatnonzero(heads == 0)
    if roots.size != 1:
        raise DataError(f"{_where(s)}: the HEADs do not form a tree ({roots.size} words with HEAD 0, words "
                        f"{(roots + 1).tolist()}); a dependency tree has exactly one root. Fix the file.")
    parent = heads - 1
    for start in range(n):  # walk up from every word: at most n steps to the root, else a cycle
        i, steps = start, 0
        while parent[i] >= 0:
            i = parent[i]
            steps += 1
            if steps > n:
                raise DataError(f"{_where(s)}: the HEADs do not form a tree (word {start + 1} is on a cycle, "
                                f"it never reaches the root). Fix the file.")
    return parent


def tree_depths(s: Sentence) -> np.ndarray:
    """``[n]`` depth of every word in the gold tree (the root word has depth 0)."""
    parent = check_tree(s)
    depth = np.full(len(parent), -1, dtype=np.int64)
    for start in range(len(parent)):
        path, i = [], start
        while i >= 0 and depth[i] < 0:
            path.append(i)
            i = parent[i]
        d = depth[i] if i >= 0 else -1
        for j in reversed(path):
            d += 1
            depth[j] = d
    return depth


def distances_from_parents(parent: np.ndarray) -> np.ndarray:
    """``[n, n]`` path lengths in the undirected tree given by 0-based parents (-1 = root)."""
    n = len(parent)
    adj = [[] for _ in range(n)]
    for i, p in enumerate(parent):
        if p >= 0:
            adj[i].append(int(p))
            adj[int(p)].append(i)
    dist = np.full((n, n), -1, dtype=np.int64)
    for src in range(n):  # breadth-first search from every word: O(n^2), n is a sentence
        dist[src, src] = 0
        frontier = [src]
        while frontier:
            nxt = []
            for u in frontier:
                for v in adj[u]:
                    if dist[src, v] < 0:
                        dist[src, v] = dist[src, u] + 1
                        nxt.append(v)
            frontier = nxt
    return dist


def tree_distances(s: Sentence) -> np.ndarray:
    """``[n, n]`` path length between every two words in the gold undirected tree (0 on the diagonal)."""
    return distances_from_parents(check_tree(s))


def punct_mask(s: Sentence) -> np.ndarray:
    """``[n]`` bool: the words excluded from UUAS and root accuracy (see :data:`PTB_PUNCT`)."""
    return np.array([u == "PUNCT" or x in PTB_PUNCT for u, x in zip(s.upos, s.xpos)], dtype=bool)



# ----------------------------------------------------------------------------------------------- relation tasks

#: Relations that make a word its head verb's subject in ``subject_of`` (nsubj:outer is not one: see subject.yaml).
SUBJECT_OF_RELS = frozenset({"nsubj", "nsubj:pass", "csubj", "csubj:pass"})
#: Relations that make a noun-phrase span a subject in ``subject_span`` (nominal subjects only, as the word task).
SUBJECT_SPAN_RELS = frozenset({"nsubj", "nsubj:pass"})
#: Heads of the noun-phrase spans of ``subject_span``.
NOMINAL_UPOS = frozenset({"NOUN", "PROPN", "PRON"})


@register_label_fn("dep_arc", needs=("syntax",))
def dep_arc(s: Sentence) -> list[int]:
    """Each word's head (0-based); the root word chooses itself."""
    parent = check_tree(s)
    return [int(p) if p >= 0 else i for i, p in enumerate(parent)]


@register_label_fn("dep_label", needs=("syntax",))
def dep_label(s: Sentence) -> list[tuple[int, int, str]]:
    """(dependent, head, universal relation) of every gold arc; the root's arc has no head word and is left out."""
    parent = check_tree(s)
    return [(i, int(p), s.deprels[i].split(":")[0]) for i, p in enumerate(parent) if p >= 0]


@register_label_fn("subject_of", needs=("upos", "syntax"))
def subject_of(s: Sentence) -> list[tuple[int, int, str]]:
    """(verb, candidate, subj | not_subj) for every UPOS VERB word and every other word of its sentence."""
    parent = check_tree(s)
    out = []
    for v, u in enumerate(s.upos):
        if u != "VERB":
            continue
        for w in range(len(s)):
            if w != v:
                subj = parent[w] == v and s.deprels[w] in SUBJECT_OF_RELS
                out.append((v, w, "subj" if subj else "not_subj"))
    return out


def subtree_span(parent: np.ndarray, head: int) -> tuple[int, int, bool]:
    """(start, end, contiguous): the word range ``start .. end - 1`` covered by ``head``'s subtree (the head and all
    its descendants), and whether the subtree fills that range (False: a non-projective subtree with a gap)."""
    inside = np.zeros(len(parent), dtype=bool)
    for i in range(len(parent)):
        j = i
        while j >= 0 and j != head:
            j = parent[j]
        inside[i] = j == head
    idx = np.flatnonzero(inside)
    start, end = int(idx[0]), int(idx[-1]) + 1
    return start, end, bool(inside[start:end].all())


@register_label_fn("subject_span", needs=("upos", "syntax"))
def subject_span(s: Sentence) -> list[tuple[int, int, str]]:
    """(start, end, subj | not_subj) for the subtree of every NOUN / PROPN / PRON word whose subtree is contiguous."""
    parent = check_tree(s)
    out = []
    for h, u in enumerate(s.upos):
        if u not in NOMINAL_UPOS:
            continue
        start, end, contiguous = subtree_span(parent, h)
        if contiguous:
            out.append((start, end, "subj" if s.deprels[h] in SUBJECT_SPAN_RELS else "not_subj"))
    return out
