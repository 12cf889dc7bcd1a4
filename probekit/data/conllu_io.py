"""Read UD CoNLL-U files into :class:`Sentence` records (syntactic words only).

Multiword-token lines (``3-4``) and empty nodes (``8.1``) are not syntactic words and are
skipped, but a multiword token's surface form is kept so that its words can be found again in
the sentence text. Every word gets a character span ``[start, end)`` in ``Sentence.text``:
this is how subwords are aligned to words later (see :mod:`probekit.activations.align`).
"""
from __future__ import annotations

import logging
import os
import pickle
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import conllu
import conllu.exceptions
import conllu.parser

from probekit._io import atomic_write_bytes, sha256_file
from probekit.errors import DataError
from probekit.keys import distrust, payload_digest

log = logging.getLogger(__name__)

#: Part of every parse-cache key (6: the entry is a record holding its key and a payload checksum; 7: Sentence has
#: ``extra``).
PARSE_CACHE_VERSION = 7


@dataclass
class Sentence:
    """One sentence of syntactic words with its gold (or silver) annotation.

    All per-word lists have one entry per syntactic word. ``heads`` are 1-based word indices
    (0 = root), as in CoNLL-U. ``spans[i]`` is the character span of word ``i`` in ``text``.
    ``has_syntax`` is False for a sentence read without dependency annotation (HEAD and DEPREL ``_``,
    e.g. a tagger's output): its ``heads`` are then all 0 and its ``deprels`` ``_``, and tasks that read
    the tree refuse it (:class:`~probekit.tasks.Task` checks).
    ``extra`` holds labels of your own by column name (:mod:`probekit.data.own_data`): a list with one label (or None)
    per word, or one label (or None) for the sentence; a task reads one with ``label: extra.NAME``.
    """

    sent_id: str
    text: str
    words: list[str]
    lemmas: list[str]
    upos: list[str]
    xpos: list[str]
    feats: list[dict[str, str]]
    heads: list[int]
    deprels: list[str]
    space_after: list[bool]
    spans: list[tuple[int, int]] = field(default_factory=list)
    #: Multiword tokens: (first word index, last word index inclusive, surface form).
    mwts: list[tuple[int, int, str]] = field(default_factory=list)
    has_syntax: bool = True
    extra: dict[str, list[str | None] | str | None] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.words)

    def __post_init__(self) -> None:
        if not self.spans:
            self.spans = compute_spans(self.text, self.words, self.space_after, self.mwts)

    def children(self, i: int) -> list[int]:
        """0-based indices of the dependents of word ``i`` (0-based)."""
        return [j for j, h in enumerate(self.heads) if h == i + 1]

    def root(self) -> int | None:
        """0-based index of the root word, or None when there is none."""
        for j, h in enumerate(self.heads):
            if h == 0:
                return j
        return None

    @classmethod
    def from_words(cls, words: list[str], *, sent_id: str = "", space_after: list[bool] | None = None,
                   upos: list[str] | None = None, extra: dict | None = None, **columns) -> "Sentence":
        """Build a sentence from words alone (other columns default to '_'; without ``heads`` the sentence has no
        syntax: ``has_syntax`` is False, as for a CoNLL-U file with HEAD and DEPREL '_')."""
        unknown = set(columns) - {"lemmas", "xpos", "feats", "heads", "deprels"}
        if unknown:
            raise TypeError(f"Sentence.from_words: unknown column(s) {sorted(unknown)}; labels of your own go in "
                            "extra={name: labels}.")
        n = len(words)
        space_after = space_after if space_after is not None else [True] * n
        text = "".join(w + (" " if sp and i < n - 1 else "") for i, (w, sp) in enumerate(zip(words, space_after)))
        has_syntax = "heads" in columns
        return cls(sent_id=sent_id, text=text, words=list(words),
                   lemmas=columns.get("lemmas", ["_"] * n), upos=upos or ["X"] * n,
                   xpos=columns.get("xpos", ["_"] * n), feats=columns.get("feats", [{} for _ in range(n)]),
                   heads=columns.get("heads", [0] * n),
                   deprels=columns.get("deprels", ["dep" if has_syntax else "_"] * n),
                   space_after=list(space_after), has_syntax=has_syntax, extra=dict(extra or {}))


def text_from_words(words: list[str], space_after: list[bool], mwts: list[tuple[int, int, str]] = ()) -> str:
    """Rebuild the sentence text from words (or multiword surfaces) and SpaceAfter."""
    mwt_start = {a: (b, form) for a, b, form in mwts}
    parts, i, n = [], 0, len(words)
    while i < n:
        if i in mwt_start:
            b, form = mwt_start[i]
            parts.append(form)
            i_last = b
        else:
            parts.append(words[i])
            i_last = i
        if space_after[i_last] and i_last < n - 1:
            parts.append(" ")
        i = i_last + 1
    return "".join(parts)


def _split_surface(start: int, surface: str, forms: list[str]) -> list[tuple[int, int]]:
    """Spans for the words of a multiword token inside its surface form.

    When the words concatenate to the surface (``do`` + ``n't`` = ``don't``), each word keeps its
    own characters. Otherwise (``del`` = ``de`` + ``el``) the surface is divided in proportion to
    the word lengths, every word getting at least one character where the surface allows.
    """
    spans = []
    pos = 0
    low = surface.lower()
    if low == "".join(forms).lower():
        for f in forms:
            spans.append((start + pos, start + pos + len(f)))
            pos += len(f)
        return spans
    total = sum(max(len(f), 1) for f in forms)
    n = len(surface)
    for k, f in enumerate(forms):
        if k == len(forms) - 1:
            end = n
        else:
            end = max(pos + 1, min(n - (len(forms) - k - 1), round(pos + n * max(len(f), 1) / total)))
        spans.append((start + pos, start + max(end, pos)))
        pos = max(end, pos)
    return spans


def compute_spans(text: str, words: list[str], space_after: list[bool],
                  mwts: list[tuple[int, int, str]] = ()) -> list[tuple[int, int]]:
    """Find each word's character span in ``text``, left to right.

    Raises ``ValueError`` when a word (or multiword surface) cannot be found where expected.
    """
    mwt_start = {a: (b, form) for a, b, form in mwts}
    spans: list[tuple[int, int]] = []
    pos, i, n = 0, 0, len(words)
    while i < n:
        if i in mwt_start:
            b, surface = mwt_start[i]
            forms = words[i:b + 1]
        else:
            b, surface, forms = i, words[i], None
        while pos < len(text) and text[pos].isspace() and not surface[:1].isspace():
            pos += 1
        if text.startswith(surface, pos):
            start = pos
        else:
            # Tolerate extra whitespace before a word (e.g. two spaces in '# text' where SpaceAfter says one)
            found = text.find(surface, pos)
            if found < 0 or text[pos:found].strip():
                raise ValueError(f"word {i + 1} {surface!r} not found in the sentence text at character {pos}: "
                                 f"{text[pos:pos + 40]!r}")
            start = found
        end = start + len(surface)
        if forms is None:
            spans.append((start, end))
        else:
            spans.extend(_split_surface(start, surface, forms))
        pos = end
        i = b + 1
    return spans


def _iter_blocks(path: Path) -> Iterator[tuple[int, list[str]]]:
    """Yield (first line number, lines) per sentence block, decoding UTF-8 strictly."""
    block: list[str] = []
    start = 1
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as e:
                raise DataError(f"{path}:{lineno}: not valid UTF-8 ({e.reason} at byte {e.start}). "
                                "CoNLL-U files must be UTF-8: re-encode the file, e.g. with "
                                "`iconv -f latin1 -t utf-8`.") from None
            if lineno == 1 and line.startswith("\ufeff"):
                line = line[1:]  # a byte-order mark, as Windows editors write it
            if not line.strip():
                if block:
                    yield start, block
                block = []
                start = lineno + 1
                continue
            if not block:
                start = lineno
            block.append(line)
    if block:
        yield start, block


def _locate_parse_error(path: Path, start: int, lines: list[str], err: Exception) -> DataError:
    """Find the line a conllu ParseException came from, by parsing the block line by line."""
    for off, line in enumerate(lines):
        if line.startswith("#"):
            continue
        try:
            conllu.parser.parse_line(line, fields=conllu.parser.DEFAULT_FIELDS)
        except Exception as e:  # noqa: BLE001 - conllu raises several types
            return DataError(f"{path}:{start + off}: malformed CoNLL-U line ({e}): {line[:80]!r}. "
                             "Fix the line, or validate the file with UD's validate.py.")
    return DataError(f"{path}:{start}: malformed CoNLL-U sentence ({err}).")


def _intern(x):
    return sys.intern(x) if type(x) is str else x


def tree_error(heads: Sequence[int]) -> str | None:
    """Why 1-based ``heads`` (0 = root) are not one tree, or None when they are."""
    roots = [i + 1 for i, h in enumerate(heads) if h == 0]
    if len(roots) != 1:
        return f"{len(roots)} words have HEAD 0 ({', '.join(map(str, roots[:5])) or 'none'}); a tree has exactly one"
    state = [0] * (len(heads) + 1)  # 0 unknown, 1 on the current path, 2 reaches the root
    state[0] = 2
    for i in range(1, len(heads) + 1):
        path, j = [], i
        while state[j] == 0:
            state[j] = 1
            path.append(j)
            j = heads[j - 1]
        if state[j] == 1:
            return f"word {j} is its own ancestor (a cycle through HEAD)"
        for k in path:
            state[k] = 2
    return None


def _parse_block(path: Path, start: int, lines: list[str], index: int,
                 rebuilt: list[int] | None = None) -> Sentence | None:
    for off, line in enumerate(lines):
        if not line.startswith("#") and line.count("\t") != 9:
            raise DataError(f"{path}:{start + off}: expected 10 tab-separated CoNLL-U columns, found "
                            f"{line.count(chr(9)) + 1} in {line[:80]!r}. Check that the file is CoNLL-U "
                            "(not CoNLL-X or space-separated) and that no tab is missing.")
    try:
        toks = conllu.parse_token_and_metadata("\n".join(lines))
    except conllu.exceptions.ParseException as e:
        raise _locate_parse_error(path, start, lines, e) from None
    meta = toks.metadata
    words, lemmas, upos, xpos, feats, heads, deprels, space_after = [], [], [], [], [], [], [], []
    mwts: list[tuple[int, int, str]] = []
    mwt_nospace: list[int] = []
    mwt_lines: list[tuple[str, int, int]] = []
    no_head: list[str] = []  # where the words without HEAD are
    line_of = [start + off for off, line in enumerate(lines) if not line.startswith("#")]
    for k, t in enumerate(toks):
        where = f"{path}:{line_of[k] if k < len(line_of) else start}"
        tid = t["id"]
        misc = t["misc"] or {}
        if isinstance(tid, tuple):
            if tid[1] == "-":
                if tid[2] <= tid[0]:
                    raise DataError(f"{where}: multiword token range {tid[0]}-{tid[2]} is empty or reversed; "
                                    "a range a-b needs a < b.")
                mwt_lines.append((where, tid[0], tid[2]))
                mwts.append((tid[0] - 1, tid[2] - 1, t["form"]))
                if misc.get("SpaceAfter") == "No":
                    mwt_nospace.append(tid[2] - 1)
            continue  # multiword token or empty node: not a syntactic word
        if tid != len(words) + 1:
            raise DataError(f"{where}: word id {tid} out of sequence (expected {len(words) + 1}). "
                            "Is a sentence missing its blank separator line?")
        head = t["head"]
        if head is not None and not isinstance(head, int):
            raise DataError(f"{where}: HEAD {head!r} is not an integer.")
        if head is None:
            no_head.append(where)
        elif t["deprel"] in (None, "_"):
            raise DataError(f"{where}: word {tid} has HEAD {head} but DEPREL '_'. Give it a relation, or write '_' "
                            "in both columns for a file without dependency annotation.")
        # Interned strings: a treebank repeats its forms, lemmas, tags and features over and over, and one shared
        # object per distinct string (kept shared through the pickled parse cache) halves the memory of a parsed
        # corpus (EWT train: 143 -> 69 MiB).
        words.append(_intern(t["form"]))
        lemmas.append(_intern(t["lemma"]))
        upos.append(_intern(t["upos"]))
        xpos.append(_intern(t["xpos"] or "_"))
        feats.append({_intern(k): _intern(v) for k, v in (t["feats"] or {}).items()})
        heads.append(head or 0)
        deprels.append(_intern(t["deprel"] or "_"))
        space_after.append(misc.get("SpaceAfter") != "No")
    if not words:
        return None
    for where, a, b in mwt_lines:
        if b > len(words):
            raise DataError(f"{where}: multiword token {a}-{b} covers words the sentence does not have "
                            f"(it has {len(words)}).")
    for k in mwt_nospace:
        space_after[k] = False
    sent_id = meta.get("sent_id", f"{path.name}#{index}")
    has_syntax = not no_head
    if no_head and len(no_head) < len(words):
        raise DataError(f"{no_head[0]}: HEAD is '_' here, but other words of sentence {sent_id!r} have a HEAD. Give "
                        "every word a HEAD and DEPREL, or none (a file without dependency annotation).")
    if has_syntax:
        for h_i, h in enumerate(heads):
            if h > len(words) or h < 0:
                raise DataError(f"{path}:{start}: sentence {sent_id}: word {h_i + 1} has HEAD {h}, "
                                f"but the sentence has {len(words)} words.")
        why = tree_error(heads)
        if why:
            raise DataError(f"{path}:{start}: sentence {sent_id}: the HEAD column is not a tree: {why}. "
                            "Fix the HEADs, or validate the file with UD's validate.py.")
    text = meta.get("text") or text_from_words(words, space_after, mwts)
    try:
        spans = compute_spans(text, words, space_after, mwts)
    except ValueError:
        # The '# text' line disagrees with the words: the model must read the words, so the text is rebuilt from
        # FORM + SpaceAfter (counted, and reported once per file by _parse_file).
        if rebuilt is not None:
            rebuilt.append(start)
        text = text_from_words(words, space_after, mwts)
        spans = compute_spans(text, words, space_after, mwts)
    return Sentence(sent_id=sent_id, text=text, words=words, lemmas=lemmas, upos=upos, xpos=xpos, feats=feats,
                    heads=heads, deprels=deprels, space_after=space_after, spans=spans, mwts=mwts,
                    has_syntax=has_syntax)


def _parse_file(path: Path) -> list[Sentence]:
    sents, rebuilt = [], []
    for k, (start, lines) in enumerate(_iter_blocks(path)):
        s = _parse_block(path, start, lines, k, rebuilt)
        if s is not None:
            sents.append(s)
    if rebuilt:
        log.warning("%s: the '# text' line of %d sentence(s) (first at line %d) does not contain the words in order; "
                    "their text was rebuilt from FORM + SpaceAfter, which is what the model reads.",
                    path, len(rebuilt), rebuilt[0])
    return sents


def _load_parse_cache(cache_file: Path, key: dict, *, strict: bool) -> list[Sentence] | None:
    """The sentences of a parsed-corpus cache entry, or None (after :func:`probekit.keys.distrust`) when the entry
    is unreadable, was made from another file or by another parser version, or fails its payload checksum."""
    try:
        with open(cache_file, "rb") as fh:
            record = pickle.load(fh)
    except Exception:  # noqa: BLE001 - a damaged pickle fails in many ways
        record = None
    if not isinstance(record, dict) or not isinstance(record.get("payload"), bytes):
        problem = "is unreadable or not a parse-cache record"
    elif record.get("key") != key:
        problem = (f"was made from another file or parser (key {record.get('key')}, expected {key})")
    elif record.get("sha256") != payload_digest(record["payload"]):
        problem = "fails its checksum (corrupted)"
    else:
        try:
            return pickle.loads(record["payload"])
        except Exception:  # noqa: BLE001
            problem = "holds an unreadable payload"
    distrust(cache_file, problem, strict=strict, what="parsed-corpus cache", error=DataError)
    return None


def read_conllu(path: str | os.PathLike, *, cache_dir: str | os.PathLike | None = None,
                limit: int | None = None, strict: bool = False) -> list[Sentence]:
    """Read a CoNLL-U file into sentences of syntactic words.

    Args:
        path: the ``.conllu`` file.
        cache_dir: where to keep a parsed copy keyed by the file's sha256 (parsing EWT train takes
            seconds; loading the cached copy takes a fraction of that). The copy holds its key (the file's sha256
            and the parser version) and a checksum of its payload, checked on load. ``None`` disables the cache.
        limit: keep only the first ``limit`` sentences.
        strict: a cache entry that fails its key or checksum is an error (else it is re-parsed, with a warning).

    Raises:
        DataError: the file is missing, not UTF-8, or malformed; the message names the file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"CoNLL-U file not found: {path}. Check the path, or point PROBEKIT_DATA_DIR at the "
                        "folder that holds the UD treebanks.")
    sents = None
    cache_file = None
    if cache_dir is not None:
        key = {"file_sha256": sha256_file(path), "parser": PARSE_CACHE_VERSION}
        cache_file = Path(cache_dir) / "parsed" / f"{key['file_sha256']}.v{PARSE_CACHE_VERSION}.pkl"
        if cache_file.is_file():
            sents = _load_parse_cache(cache_file, key, strict=strict)
    if sents is None:
        sents = _parse_file(path)
        if cache_file is not None:
            payload = pickle.dumps(sents, protocol=pickle.HIGHEST_PROTOCOL)
            record = {"key": key, "sha256": payload_digest(payload), "payload": payload}
            atomic_write_bytes(cache_file, pickle.dumps(record, protocol=pickle.HIGHEST_PROTOCOL))
    if limit is not None:
        sents = sents[:limit]
    return sents


def _feats_str(f: dict[str, str]) -> str:
    return "|".join(f"{k}={v}" for k, v in sorted(f.items(), key=lambda kv: kv[0].lower())) or "_"


def write_conllu(sentences: Iterable[Sentence], path: str | os.PathLike) -> None:
    """Write sentences as CoNLL-U (atomically), with ``# sent_id`` and ``# text`` lines."""
    out = []
    for s in sentences:
        out.append(f"# sent_id = {s.sent_id}")
        out.append(f"# text = {s.text}")
        for i, w in enumerate(s.words):
            misc = "_" if s.space_after[i] or i == len(s.words) - 1 else "SpaceAfter=No"
            out.append("\t".join([str(i + 1), w, s.lemmas[i] or "_", s.upos[i], s.xpos[i] or "_", _feats_str(s.feats[i]),
                                  str(s.heads[i]) if s.has_syntax else "_", s.deprels[i] if s.has_syntax else "_",
                                  "_", misc]))
        out.append("")
    atomic_write_bytes(Path(path), ("\n".join(out) + "\n").encode("utf-8"))
