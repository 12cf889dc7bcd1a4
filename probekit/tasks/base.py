"""Task specs (YAML) + registered label functions.

A word-level label function maps a :class:`~probekit.data.Sentence` to one label per word
(``None`` = leave this word out); a sentence-level one maps it to one label or ``None``. The relation levels
(:data:`RELATION_LEVELS`, probed by :mod:`probekit.runner.relations`) return items over the sentence's words:

* ``pair``: a list of ``(i, j, label)``, two 0-based word indices and the pair's label;
* ``span``: a list of ``(start, end, label)``, the words ``start .. end - 1`` (0-based, end exclusive);
* ``choice``: one 0-based word index (the word chosen for this word, e.g. its head) or ``None`` per word; the
  task's ``labels`` then has one entry naming what is chosen (``[head]``).
"""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import yaml

from probekit._io import check_name
from probekit.data.conllu_io import Sentence
from probekit.errors import ConfigError, TaskError, unknown_name
from probekit.keys import code_version, content_key, payload_digest

LabelFn = Callable[[Sentence], object]
_LABEL_FNS: dict[str, LabelFn] = {}

#: Levels probed word by word or sentence by sentence (the experiment's ``tasks:``).
ITEM_LEVELS = ("word", "sentence")
#: Levels whose items relate several words (``relations:`` of an experiment; see the module doc).
RELATION_LEVELS = ("pair", "span", "choice")
LEVELS = ITEM_LEVELS + RELATION_LEVELS

TASK_KEYS = {"name", "level", "description", "labels", "label_fn", "label", "version", "rule", "citation", "params"}
#: ``label: extra.NAME`` in a task file: the labels of the sentences' own column NAME (``Sentence.extra``).
EXTRA_PREFIX = "extra."


#: What a label function may declare that it reads (``needs``), and how a sentence lacks it.
NEEDS = {
    "upos": "UPOS is '_' (the file has no part-of-speech tags)",
    "syntax": "HEAD and DEPREL are '_' (the file has no dependency annotation)",
}


def register_label_fn(name: str, *, needs: Sequence[str] = ()) -> Callable[[LabelFn], LabelFn]:
    """Register a label function under ``name`` so that task YAML files can refer to it.

    ``needs`` names the annotation it reads (``"upos"``, ``"syntax"``): a task refuses sentences that lack it,
    with an error, instead of labelling them all "other" (a tagger's output has no tree, for instance).
    """
    bad = set(needs) - set(NEEDS)
    if bad:
        raise ValueError(f"register_label_fn({name!r}): unknown needs {sorted(bad)}; known: {sorted(NEEDS)}")

    def deco(fn: LabelFn) -> LabelFn:
        fn.needs = tuple(needs)
        _LABEL_FNS[name] = fn
        return fn

    return deco


def _missing(s: Sentence, need: str) -> bool:
    if need == "syntax":
        return not s.has_syntax
    return any(u in (None, "_") for u in s.upos)


def _resolve_label_fn(ref: str, where: str) -> LabelFn:
    _load_builtin_label_fns()
    if ref in _LABEL_FNS:
        return _LABEL_FNS[ref]
    if ":" in ref:
        mod, _, attr = ref.partition(":")
        try:
            return getattr(importlib.import_module(mod), attr)
        except (ImportError, AttributeError) as e:
            raise TaskError(f"{where}: label_fn {ref!r} cannot be imported ({e}).") from None
    raise unknown_name("label function", ref, _LABEL_FNS, TaskError,
                       hint=f"(in {where}; or give 'module:function')")


def _load_builtin_label_fns() -> None:
    import probekit.tasks.labels  # noqa: F401  (registers the word-level label functions)
    import probekit.tasks.relations  # noqa: F401  (registers the pair, span and choice label functions)
    try:
        import probekit.tasks.sentence_labels  # noqa: F401
    except ImportError:
        pass


@dataclass
class Task:
    """A probing task.

    Attributes:
        name: registry name, e.g. ``upos``.
        level: ``word``, ``sentence`` or a relation level (``pair``, ``span``, ``choice``).
        labels: the label set in a fixed order (index = class id).
        label_fn: Sentence -> per-word labels (word level) or one label (sentence level).
        version: bumped whenever the labelling rule changes (it is part of result rows).
    """

    name: str
    level: str
    labels: list[str]
    label_fn: LabelFn
    description: str = ""
    version: int = 1
    rule: str = ""
    source: str = ""
    params: dict = field(default_factory=dict)
    #: sha256 of the task's YAML file (set when loaded from one): part of :attr:`fingerprint`.
    source_sha256: str = ""

    def __repr__(self) -> str:
        return f"Task({self.name!r}, level={self.level!r}, labels={self.labels})"

    @property
    def fingerprint(self) -> str:
        """What makes this task's labels what they are, for result keys: the YAML file's content (or, for a task
        built in code, its fields) and the code version of its label function. A rule changed without bumping
        ``version`` gives another fingerprint, so results of the old rule are never reused."""
        spec = self.source_sha256 or {"name": self.name, "level": self.level, "labels": self.labels,
                                      "version": self.version, "params": self.params}
        return content_key("task", {"spec": spec, "label_fn": code_version(self.label_fn)})

    def label(self, sentence: Sentence):
        """The label function's output for one sentence; TaskError when the sentence lacks an annotation the
        function reads (its ``needs``: no tree, no UPOS), rather than labels computed from '_' columns."""
        for need in getattr(self.label_fn, "needs", ()):
            if _missing(sentence, need):
                raise TaskError(f"Task {self.name} reads {need}, but in sentence {sentence.sent_id!r} {NEEDS[need]}. "
                                "Use a treebank with that annotation, or add it with probekit.data.annotate "
                                "(spaCy, silver).")
        return self.label_fn(sentence, **self.params) if self.params else self.label_fn(sentence)

    def encode(self, sentences: Sequence[Sentence]) -> np.ndarray:
        """Class ids for every word (word tasks; flattened in corpus order) or sentence; -1 = left out. For a
        relation level: the class ids of the items in the label function's order (``pair``, ``span``), or each
        word's chosen word index (``choice``; -1 = left out)."""
        if self.level in RELATION_LEVELS:
            return np.asarray(self.items(sentences).y, dtype=np.int64)
        index = {lab: i for i, lab in enumerate(self.labels)}
        out: list[int] = []
        for s in sentences:
            labs = self.label(s)
            if self.level == "word":
                if len(labs) != len(s):
                    raise TaskError(f"Task {self.name}: label function returned {len(labs)} labels for sentence "
                                    f"{s.sent_id!r} with {len(s)} words.")
                for lab in labs:
                    out.append(self._index(index, lab, s))
            else:
                out.append(self._index(index, labs, s))
        return np.asarray(out, dtype=np.int64)

    def items(self, sentences: Sequence[Sentence]) -> "RelationItems":
        """The items of a relation-level task over ``sentences`` (see :class:`RelationItems`)."""
        if self.level not in RELATION_LEVELS:
            raise TaskError(f"Task {self.name} is a {self.level}-level task; items() is for the relation levels "
                            f"{list(RELATION_LEVELS)}.")
        index = {lab: i for i, lab in enumerate(self.labels)}
        sent, a, b, y = [], [], [], []
        for k, s in enumerate(sentences):
            out = self.label(s)
            n = len(s)
            if self.level == "choice":
                if len(out) != n:
                    raise TaskError(f"Task {self.name}: label function returned {len(out)} choices for sentence "
                                    f"{s.sent_id!r} with {n} words.")
                for i, j in enumerate(out):
                    if j is not None and not 0 <= j < n:
                        raise TaskError(f"Task {self.name}: word {i + 1} of sentence {s.sent_id!r} chooses word "
                                        f"index {j}, outside 0..{n - 1}.")
                    sent.append(k)
                    a.append(i)
                    b.append(i)
                    y.append(-1 if j is None else int(j))
                continue
            for item in out:
                i, j, lab = item
                ok = (0 <= i < n and 0 <= j < n) if self.level == "pair" else (0 <= i < j <= n)
                if not ok:
                    raise TaskError(f"Task {self.name}: item {item!r} of sentence {s.sent_id!r} ({n} words) is not "
                                    + ("two word indices in 0..n-1." if self.level == "pair"
                                       else "a span start < end within 0..n."))
                sent.append(k)
                a.append(i)
                b.append(j)
                y.append(self._index(index, lab, s))
        offsets = np.concatenate([[0], np.cumsum([len(s) for s in sentences])]).astype(np.int64)
        return RelationItems(level=self.level, sentence=np.asarray(sent, dtype=np.int64),
                             a=np.asarray(a, dtype=np.int64), b=np.asarray(b, dtype=np.int64),
                             y=np.asarray(y, dtype=np.int64), offsets=offsets)

    def _index(self, index, lab, s) -> int:
        if lab is None:
            return -1
        try:
            return index[lab]
        except KeyError:
            raise TaskError(f"Task {self.name}: label {lab!r} (sentence {s.sent_id!r}) is not in the task's label set "
                            f"{self.labels}. Add it to the YAML's 'labels' or fix the label function.") from None


@dataclass
class RelationItems:
    """The items of a relation-level task over a list of sentences, in corpus order.

    ``sentence[k]`` is item k's sentence (position in the list), ``a[k]`` / ``b[k]`` its word indices within that
    sentence (``pair``: the two words; ``span``: start and end, end exclusive; ``choice``: the word itself twice),
    ``y[k]`` its class id (``choice``: the chosen word's index in the sentence; -1 = left out). ``offsets`` are the
    sentences' first word rows in a store of these sentences (``[S + 1]``), so ``offsets[sentence] + a`` is a row.
    """

    level: str
    sentence: np.ndarray
    a: np.ndarray
    b: np.ndarray
    y: np.ndarray
    offsets: np.ndarray

    def rows(self, which: str = "a") -> np.ndarray:
        """Store rows of the items' ``a`` (or ``b``) words."""
        return self.offsets[self.sentence] + (self.a if which == "a" else self.b)

    def take(self, keep: np.ndarray) -> "RelationItems":
        return RelationItems(self.level, self.sentence[keep], self.a[keep], self.b[keep], self.y[keep], self.offsets)


def task_dirs() -> list[Path]:
    """Folders searched for task YAML files: $PROBEKIT_TASKS_PATH entries, then the built-in tasks."""
    dirs = [Path(p) for p in os.environ.get("PROBEKIT_TASKS_PATH", "").split(os.pathsep) if p]
    here = Path(__file__).resolve()
    for cand in (here.parents[2] / "tasks", here.parents[1] / "tasks_yaml"):
        if cand.is_dir():
            dirs.append(cand)
    return dirs


def load_task_file(path: Path) -> Task:
    try:
        raw = path.read_bytes()
        spec = yaml.safe_load(raw.decode("utf-8"))
    except yaml.YAMLError as e:
        raise TaskError(f"{path}: invalid YAML ({e}).") from None
    except UnicodeDecodeError as e:
        raise TaskError(f"{path}: not valid UTF-8 ({e.reason} at byte {e.start}). Save the task file as UTF-8."
                        ) from None
    if not isinstance(spec, dict):
        raise TaskError(f"{path}: a task file must be a mapping with keys {sorted(TASK_KEYS)}.")
    unknown = set(spec) - TASK_KEYS
    if unknown:
        k = sorted(unknown)[0]
        raise unknown_name("task key", k, TASK_KEYS, TaskError, hint=f"(in {path})")
    for key in ("name", "level", "labels"):
        if key not in spec:
            raise TaskError(f"{path}: missing required key {key!r}.")
    if ("label_fn" in spec) == ("label" in spec):
        raise TaskError(f"{path}: give exactly one of 'label_fn' (a label function) and 'label' (extra.NAME: a column "
                        "of your own data).")
    if "label" in spec and (not isinstance(spec["label"], str) or not spec["label"].startswith(EXTRA_PREFIX)
                            or spec["label"] == EXTRA_PREFIX):
        raise TaskError(f"{path}: 'label' must be extra.NAME, the name of a label column of your own data "
                        f"(docs/data.md); got {spec['label']!r}.")
    if "label" in spec and spec.get("params"):
        raise TaskError(f"{path}: 'params' go to a label function; a task with 'label: extra.NAME' has none.")
    if spec["level"] not in LEVELS:
        raise TaskError(f"{path}: level must be one of {', '.join(LEVELS)}; got {spec['level']!r}.")
    labels = spec["labels"]
    if not isinstance(labels, list) or not labels or not all(isinstance(x, (str, int)) and not isinstance(x, bool)
                                                             for x in labels):
        raise TaskError(f"{path}: 'labels' must be a non-empty list of strings, e.g. [aux, not_aux]; got {labels!r}. "
                        "(Quote labels that YAML reads as booleans or null, such as 'yes', 'no', 'null'.)")
    labels = [str(x) for x in labels]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise TaskError(f"{path}: 'labels' lists {dup} more than once; each label is one class.")
    version = spec.get("version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise TaskError(f"{path}: 'version' must be a positive whole number (bump it when the rule changes); "
                        f"got {version!r}.")
    for key, typ, what in (("name", str, "a string"), ("label_fn", str, "a string: a registered name or "
                           "'module:function'"), ("params", dict, "a mapping of keyword arguments")):
        if spec.get(key) is not None and not isinstance(spec[key], typ):
            raise TaskError(f"{path}: {key!r} must be {what}; got {spec[key]!r}.")
    try:  # a task's name becomes part of file names (baseline runs, saved probes)
        check_name(spec["name"], f"{path}: 'name'")
    except ConfigError as e:
        raise TaskError(str(e)) from None
    if "label" in spec:
        label_fn, params = extra_labels, {"column": spec["label"][len(EXTRA_PREFIX):], "level": spec["level"]}
    else:
        label_fn, params = _resolve_label_fn(spec["label_fn"], str(path)), dict(spec.get("params") or {})
    return Task(name=spec["name"], level=spec["level"], labels=labels, label_fn=label_fn,
                description=spec.get("description", ""), version=version, rule=spec.get("rule", ""), source=str(path),
                params=params, source_sha256=payload_digest(raw))


def extra_labels(s: Sentence, column: str, level: str):
    """The labels of one of the sentence's own columns (``Sentence.extra[column]``): a list with one label per word for
    a word task, one label for a sentence task (see :mod:`probekit.data.own_data`)."""
    if column not in s.extra:
        has = ", ".join(sorted(s.extra)) or "none (a CoNLL-U sentence has none)"
        raise TaskError(f"Sentence {s.sent_id!r} has no column {column!r} of its own (label: extra.{column}); its own "
                        f"columns: {has}. Read the data with probekit.data.own_data, or fix the column name.")
    v = s.extra[column]
    if (level == "word") != isinstance(v, list):
        raise TaskError(f"Column {column!r} of sentence {s.sent_id!r} holds "
                        + ("one label per word" if isinstance(v, list) else "one label for the sentence")
                        + f", but the task is {level}-level. Set the task's level to "
                        + ("'word'." if isinstance(v, list) else "'sentence'."))
    return v


def extra_task(name: str, level: str, labels: Sequence[str], *, column: str | None = None, **fields) -> Task:
    """A task on a column of your own data (``column`` defaults to ``name``): the Python twin of a task file with
    ``label: extra.COLUMN``. Other keyword arguments are :class:`Task` fields (``description``, ``version``, ``rule``)."""
    if level not in ("word", "sentence"):
        raise TaskError(f"extra_task({name!r}): level must be 'word' or 'sentence', got {level!r}.")
    return Task(name=name, level=level, labels=[str(x) for x in labels], label_fn=extra_labels,
                params={"column": column or name, "level": level}, **fields)


@lru_cache(maxsize=None)
def _all_tasks() -> dict[str, Task]:
    tasks: dict[str, Task] = {}
    for d in task_dirs():
        for f in sorted(d.glob("*.yaml")):
            t = load_task_file(f)
            tasks.setdefault(t.name, t)
    return tasks


def list_tasks() -> list[Task]:
    return list(_all_tasks().values())


#: Tasks given in Python (Task objects, ``module:function``) in this process, by name: what lets the stages that only
#: see a task's name in a result row (tables, error analysis, sweep cells) find it.
_PY_TASKS: dict[str, Task] = {}


def _import_task(ref: str) -> Task:
    mod, _, attr = ref.partition(":")
    try:
        obj = getattr(importlib.import_module(mod), attr)
    except (ImportError, AttributeError, ValueError) as e:
        raise TaskError(f"Task {ref!r} cannot be imported ({e}). Give 'module:function' of a module on the Python path "
                        "whose function returns a probekit Task (or names a Task).") from None
    task = obj if isinstance(obj, Task) else obj() if callable(obj) else obj
    if not isinstance(task, Task):
        raise TaskError(f"Task {ref!r} gave a {type(task).__name__}, not a probekit Task: the function must return "
                        "probekit.tasks.Task(...) (see docs/data.md).")
    return task


def _remember(task: Task) -> Task:
    """Make a task given in Python known by its name in this process; its name may not be a task file's."""
    try:
        check_name(task.name, "A task's name")
    except ConfigError as e:
        raise TaskError(str(e)) from None
    filed = _all_tasks().get(task.name)
    if filed is not None and filed is not task and filed.fingerprint != task.fingerprint:
        raise TaskError(f"Task {task.name!r} given in Python has the name of the task file {filed.source}; give it "
                        "another name, so that results name one task.")
    if filed is None:
        _PY_TASKS[task.name] = task
    return task


def get_task(name: str | Task) -> Task:
    """A task: a :class:`Task` given in Python, ``module:function`` (a function returning a Task, or a Task), or the
    name of a task file or of a Python task given earlier in this process."""
    if isinstance(name, Task):
        return _remember(name)
    if not isinstance(name, str):
        raise TaskError(f"A task is a name, 'module:function' or a Task, got {name!r}.")
    if ":" in name:
        return _remember(_import_task(name))
    if name in _PY_TASKS:
        return _PY_TASKS[name]
    tasks = _all_tasks()
    if name not in tasks:
        raise unknown_name("task", name, tasks, TaskError,
                           hint="Add a YAML file to tasks/ or to a folder in PROBEKIT_TASKS_PATH, or give "
                                "'module:function' of a Python task.")
    return tasks[name]
