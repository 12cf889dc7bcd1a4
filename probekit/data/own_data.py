"""Your own data as :class:`~probekit.data.Sentence` records: JSONL, CSV or a Hugging Face ``datasets`` dataset, with
labels of your own in ``Sentence.extra``.

Every format has one sentence per record (a JSON line, a CSV row, a dataset row) and these columns
(:class:`Columns` renames them):

- ``tokens``: the words. JSONL and datasets: a list of strings; CSV: one cell, the words separated by whitespace.
- ``id`` (optional): the sentence id (default ``<source>#<n>``, n counted from 0).
- ``text`` (optional): the sentence text the words are found in, left to right (default: the words joined by
  single spaces). Give it when spacing matters (``don't`` as ``do`` + ``n't``, languages written without spaces).
- label columns, each kept in ``Sentence.extra[name]``: a **word** column has one label per word (a list; in CSV
  the labels separated by whitespace, and only the columns named in ``Columns.word`` are word columns); a
  **sentence** column has one label per sentence. Labels are kept as strings (JSON ``1`` -> ``"1"``, ``true`` ->
  ``"true"``); JSON ``null``, an empty CSV cell and a missing value leave the word or sentence out of a task.
  A Hugging Face ``ClassLabel`` column gives the class names, not their numbers.

Without ``Columns.word`` and ``Columns.sentence``, every other column of the first record is a label column: in JSONL
and datasets a list is a word column and a single value a sentence column; in CSV every other column is a sentence
column. When either is given, only the columns named there are read. Every record must have every column of the
first record (``null`` where it has no label) and no others, so that a typo in one line is an error, not a column.

Own sentences carry no UD annotation (UPOS ``_``, no tree), so tasks that read UD columns refuse them; a task reads
an own column with ``label: extra.NAME`` (``tasks/README.md``). Bad input is a :class:`~probekit.errors.DataError`
that names the file and line (or dataset row) and the key.
"""
from __future__ import annotations

import csv
import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Mapping, Sequence

from probekit._extras import require
from probekit._io import utf8_lines
from probekit.data.conllu_io import Sentence, compute_spans
from probekit.errors import ConfigError, DataError, unknown_name
from probekit.keys import payload_digest

#: The formats of own data (``dataset:`` in a config; ``hf:NAME_OR_PATH`` names a Hugging Face dataset).
FORMATS = ("jsonl", "csv")
HF_PREFIX = "hf:"
_SCALARS = (str, int, float, bool, type(None))


@dataclass(frozen=True)
class Columns:
    """Which columns hold what (see the module doc); ``word`` / ``sentence`` None: every other column, by kind."""

    tokens: str = "tokens"
    id: str | None = None
    text: str | None = None
    word: tuple[str, ...] | None = None
    sentence: tuple[str, ...] | None = None

    @classmethod
    def from_mapping(cls, d: Mapping | None, where: str = "columns") -> "Columns":
        """Columns from a config mapping such as ``{tokens: words, word: [ner], sentence: [topic]}``."""
        d = dict(d or {})
        names = [f.name for f in fields(cls)]
        for k in d:
            if k not in names:
                raise unknown_name("columns key", k, names, ConfigError, hint=f"(in {where})")
        for k in ("tokens", "id", "text"):
            if k in d and not (isinstance(d[k], str) and d[k]) and not (k != "tokens" and d[k] is None):
                raise ConfigError(f"{where}.{k} must be a column name, got {d[k]!r}.")
        for k in ("word", "sentence"):
            v = d.get(k)
            if isinstance(v, str):
                v = [v]
            if v is not None and not (isinstance(v, (list, tuple)) and all(isinstance(x, str) and x for x in v)):
                raise ConfigError(f"{where}.{k} must be a list of column names, got {d[k]!r}.")
            d[k] = None if v is None else tuple(v)
        cols = cls(**d)
        named = [c for c in (cols.tokens, cols.id, cols.text, *(cols.word or ()), *(cols.sentence or ())) if c]
        dup = sorted({c for c in named if named.count(c) > 1})
        if dup:
            raise ConfigError(f"{where}: column(s) {dup} named twice; each column has one role.")
        return cols

    def as_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


# ----------------------------------------------------------------------------------------------- records

def _label(v: Any) -> str | None:
    """A label as the string a task's ``labels`` list holds (JSON spelling for numbers and booleans)."""
    if v is None or isinstance(v, str):
        return v
    return json.dumps(v)


class _Reader:
    """Turns records (mappings) of one source into sentences, checking each against the first record's columns."""

    def __init__(self, source: str, columns: Columns, *, split_cells: bool):
        self.source, self.cols, self.split_cells = source, columns, split_cells
        self.kinds: dict[str, str] | None = None  # label column -> "word" | "sentence", from the first record
        self.keys: set[str] | None = None

    def _kinds_of(self, rec: Mapping, where: str) -> dict[str, str]:
        c = self.cols
        if c.word is not None or c.sentence is not None:
            return {**{k: "word" for k in c.word or ()}, **{k: "sentence" for k in c.sentence or ()}}
        own = {c.tokens, c.id, c.text}
        kinds = {}
        for k, v in rec.items():
            if k in own:
                continue
            if self.split_cells:
                kinds[k] = "sentence"  # CSV: word columns are only those named in columns.word
            elif isinstance(v, (list, tuple)):
                kinds[k] = "word"
            elif isinstance(v, _SCALARS):
                kinds[k] = "sentence"
            else:
                raise DataError(f"{where}: key {k!r} holds a {type(v).__name__}; a label column holds one label or "
                                "a list of labels, one per token. Leave nested values out with columns.word / "
                                "columns.sentence.")
        return kinds

    def sentence(self, rec: Mapping, where: str, index: int) -> Sentence:
        c = self.cols
        if self.kinds is None:
            self.kinds = self._kinds_of(rec, where)
            self.keys = set(rec)
        elif c.word is None and c.sentence is None and set(rec) != self.keys:
            extra, missing = sorted(set(rec) - self.keys), sorted(self.keys - set(rec))
            raise DataError(f"{where}: the keys differ from the first record's: "
                            + (f"{extra} not in the first record" if extra else f"{missing} missing")
                            + ". Give every record the same keys (null where there is no label).")
        words = self._tokens(rec, where)
        n = len(words)
        sent_id = str(self._get(rec, c.id, where, "columns.id")) if c.id else f"{self.source}#{index}"
        extra: dict[str, list[str | None] | str | None] = {}
        for k, kind in self.kinds.items():
            v = self._get(rec, k, where, f"columns.{kind}")
            extra[k] = self._word_labels(v, k, n, where) if kind == "word" else self._sentence_label(v, k, where)
        if not c.text:
            return Sentence.from_words(words, sent_id=sent_id, upos=["_"] * n, extra=extra)
        text = self._get(rec, c.text, where, "columns.text")
        if not isinstance(text, str):
            raise DataError(f"{where}: key {c.text!r} (the text column) must be a string, got {text!r}.")
        try:
            spans = compute_spans(text, words, [True] * n)
        except ValueError as e:
            raise DataError(f"{where}: key {c.text!r}: the tokens are not found in the text in order ({e}).") from None
        # as in CoNLL-U, a word is followed by a space unless the text says otherwise (the last word: no next word)
        space_after = [k == n - 1 or spans[k + 1][0] > end for k, (_, end) in enumerate(spans)]
        s = Sentence.from_words(words, sent_id=sent_id, space_after=space_after, upos=["_"] * n, extra=extra)
        s.text, s.spans = text, spans
        return s

    @staticmethod
    def _get(rec: Mapping, key: str, where: str, role: str):
        if key not in rec:
            raise DataError(f"{where}: no key {key!r} (named in {role}); keys here: {sorted(map(str, rec))}.")
        return rec[key]

    def _tokens(self, rec: Mapping, where: str) -> list[str]:
        key = self.cols.tokens
        if key not in rec:
            raise DataError(f"{where}: no key {key!r} (the tokens column); keys here: {sorted(map(str, rec))}. Name "
                            "the column that holds the words in columns.tokens.")
        v = rec[key]
        if self.split_cells and isinstance(v, str):
            v = v.split()
        if not isinstance(v, (list, tuple)) or not all(isinstance(t, str) for t in v):
            raise DataError(f"{where}: key {key!r} must be a list of strings (the words), got {v!r}.")
        if not v:
            raise DataError(f"{where}: key {key!r} has no tokens; leave empty sentences out of the file.")
        for i, t in enumerate(v):
            if not t.strip():
                raise DataError(f"{where}: key {key!r}: token {i + 1} is empty or only whitespace.")
        return list(v)

    def _word_labels(self, v, key: str, n: int, where: str) -> list[str | None]:
        if self.split_cells and isinstance(v, str):
            v = v.split()
        if v is None:
            return [None] * n
        if not isinstance(v, (list, tuple)):
            raise DataError(f"{where}: key {key!r} is a word column but holds {v!r}, not a list of {n} labels.")
        if len(v) != n:
            raise DataError(f"{where}: key {key!r} has {len(v)} labels for {n} tokens; a word column has one label "
                            "(or null) per token.")
        bad = [x for x in v if not isinstance(x, _SCALARS)]
        if bad:
            raise DataError(f"{where}: key {key!r}: label {bad[0]!r} is not a string, number, boolean or null.")
        return [_label(x) for x in v]

    def _sentence_label(self, v, key: str, where: str) -> str | None:
        if not isinstance(v, _SCALARS):
            raise DataError(f"{where}: key {key!r} is a sentence column but holds {v!r}; a sentence column holds "
                            "one label (name word columns in columns.word).")
        if self.split_cells and v == "":
            return None
        return _label(v)


def _finish(sents: list[Sentence], source: str) -> list[Sentence]:
    if not sents:
        raise DataError(f"{source}: no sentences. Check the file (one sentence per record).")
    return sents


# ----------------------------------------------------------------------------------------------- formats

def read_jsonl(path: str | os.PathLike, *, columns: Columns | None = None, limit: int | None = None
               ) -> list[Sentence]:
    """Sentences of a JSON Lines file: one JSON object per line (blank lines are skipped)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"JSONL file not found: {path}. Check the path.")
    reader = _Reader(path.name, columns or Columns(), split_cells=False)
    sents: list[Sentence] = []
    for lineno, line in utf8_lines(path):
        if limit is not None and len(sents) >= limit:
            break
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{where}: not valid JSON ({e.msg} at column {e.colno}). Each line holds one JSON "
                            "object.") from None
        if not isinstance(rec, dict):
            raise DataError(f"{where}: expected a JSON object ({{\"tokens\": [...], ...}}), got "
                            f"{type(rec).__name__}.")
        sents.append(reader.sentence(rec, where, len(sents)))
    return _finish(sents, str(path))


def read_csv(path: str | os.PathLike, *, columns: Columns | None = None, limit: int | None = None
             ) -> list[Sentence]:
    """Sentences of a CSV file with a header row, one sentence per row (``.tsv``: tab-separated)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"CSV file not found: {path}. Check the path.")
    reader = _Reader(path.name, columns or Columns(), split_cells=True)
    sents: list[Sentence] = []
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            rows = csv.reader(fh, delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
            header = next(rows, None)
            if not header:
                raise DataError(f"{path}:1: no header row; the first row names the columns (e.g. tokens,label).")
            dup = sorted({h for h in header if header.count(h) > 1})
            if dup:
                raise DataError(f"{path}:1: column(s) {dup} named twice in the header.")
            for row in rows:
                if limit is not None and len(sents) >= limit:
                    break
                where = f"{path}:{rows.line_num}"
                if not any(cell.strip() for cell in row):
                    continue
                if len(row) != len(header):
                    raise DataError(f"{where}: {len(row)} cells for {len(header)} columns ({', '.join(header)}). "
                                    "Quote cells that contain the delimiter.")
                sents.append(reader.sentence(dict(zip(header, row)), where, len(sents)))
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not valid UTF-8 ({e.reason} at byte {e.start}). Save the file as UTF-8.") from None
    except csv.Error as e:
        raise DataError(f"{path}: malformed CSV ({e}).") from None
    return _finish(sents, str(path))


def _class_names(feature) -> list[str] | None:
    """The class names of a ClassLabel feature, or of a list of ClassLabel; else None."""
    inner = getattr(feature, "feature", None)
    for f in (feature, inner):
        names = getattr(f, "names", None)
        if type(f).__name__ == "ClassLabel" and names:
            return list(names)
    return None


def from_hf(dataset, split: str | None = None, *, columns: Columns | None = None, limit: int | None = None
            ) -> list[Sentence]:
    """Sentences of a Hugging Face dataset: a ``datasets.Dataset``, a ``DatasetDict`` with ``split``, a folder written
    by ``save_to_disk``, or a name for ``datasets.load_dataset`` (from its cache when offline). Needs the ``[hf]``
    extra."""
    datasets = require("datasets", extra="hf", purpose="Reading a Hugging Face dataset")
    label = dataset if isinstance(dataset, str) else type(dataset).__name__
    if isinstance(dataset, str):
        try:
            dataset = (datasets.load_from_disk(dataset) if Path(dataset).exists()
                       else datasets.load_dataset(dataset))
        except Exception as e:  # noqa: BLE001 - datasets raises many types for a missing or unreadable dataset
            raise DataError(f"Hugging Face dataset {label!r} could not be loaded ({type(e).__name__}: {e}). Give a "
                            "folder written by save_to_disk, or a name datasets.load_dataset finds.") from None
    if isinstance(dataset, datasets.DatasetDict):
        if split not in dataset:
            raise unknown_name(f"split of Hugging Face dataset {label!r}", str(split), list(dataset), DataError)
        dataset, label = dataset[split], f"{label}[{split}]"
    if not isinstance(dataset, datasets.Dataset):
        raise DataError(f"Expected a datasets.Dataset or DatasetDict, got {type(dataset).__name__}.")
    names = {k: n for k, f in dataset.features.items() if (n := _class_names(f))}
    reader = _Reader(label, columns or Columns(), split_cells=False)
    n_rows = len(dataset) if limit is None else min(limit, len(dataset))
    sents = []
    for i in range(n_rows):
        rec = dataset[i]
        for k, classes in names.items():
            v = rec.get(k)
            rec[k] = [None if x is None else classes[x] for x in v] if isinstance(v, list) else (
                None if v is None else classes[v])
        sents.append(reader.sentence(rec, f"{label} row {i}", i))
    return _finish(sents, label)


def sentences_digest(sents: Sequence[Sentence]) -> str:
    """What identifies own data in store and result keys: its sentences' ids, text, words and labels."""
    return payload_digest([[s.sent_id, s.text, s.words, s.extra] for s in sents])


def load_own(dataset: str, source, *, split: str | None = None, columns: Columns | None = None,
             limit: int | None = None) -> tuple[list[Sentence], str]:
    """``(sentences, digest)`` of own data: ``dataset`` ``jsonl`` or ``csv`` with ``source`` a file, or ``hf:NAME``
    (``source`` unused) with ``split``; ``limit`` keeps the first sentences (the digest covers them all)."""
    if dataset.startswith(HF_PREFIX):
        sents = from_hf(dataset[len(HF_PREFIX):], split, columns=columns)
    elif dataset == "jsonl":
        sents = read_jsonl(source, columns=columns)
    elif dataset == "csv":
        sents = read_csv(source, columns=columns)
    else:
        raise unknown_name("own-data format", dataset, (*FORMATS, HF_PREFIX + "NAME"), DataError)
    return (sents if limit is None else sents[:limit]), sentences_digest(sents)
