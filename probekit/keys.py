"""The one place a cache key is made, and the one rule for trusting a cached record.

**Keys.** Every cache and resume record (activation stores, parsed treebanks, result units, baseline runs, task
rules) is named by :func:`content_key`: the sha256 of the canonical JSON (sorted keys, ``default=str``) of a spec
holding everything that determines the record's content, cut to the length of its kind. The same spec always gives
the same key, on any machine, so a rerun finds its finished work.

**Records.** A record stores its key inside and a checksum of its payload (:func:`payload_digest`). On load,
:func:`distrust` is the one reaction to a record whose key or checksum does not match: it is never used; it is
recomputed with a warning that names the file, or, under ``--strict``, it is a one-line error naming the file.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import logging
from pathlib import Path

from probekit.errors import ProbekitError, StoreError

log = logging.getLogger(__name__)

#: Hex digits kept of each kind's key (these lengths are part of existing keys: changing one renames every record).
KEY_LENGTHS = {"store": 20, "unit": 24, "baseline": 16, "task": 16, "eraser": 16, "analysis": 24}


def canonical_json(obj) -> bytes:
    """The canonical JSON bytes of ``obj`` (sorted keys; values JSON cannot hold are written as ``str``)."""
    return json.dumps(obj, sort_keys=True, default=str).encode()


def content_key(kind: str, spec) -> str:
    """The key of a record of ``kind`` (a name of :data:`KEY_LENGTHS`) whose content ``spec`` determines."""
    return hashlib.sha256(canonical_json(spec)).hexdigest()[:KEY_LENGTHS[kind]]


def payload_digest(payload) -> str:
    """Full sha256 of a payload: of its bytes, or of its canonical JSON."""
    data = payload if isinstance(payload, (bytes, bytearray, memoryview)) else canonical_json(payload)
    return hashlib.sha256(data).hexdigest()


def code_version(fn) -> str:
    """A version of a function's code: the sha256 of its source (its module and name when the source is not
    available, e.g. a builtin). An edited label function gives another version, so results made by the old rule
    are not reused."""
    try:
        text = inspect.getsource(fn)
    except (OSError, TypeError):
        text = ""
    name = f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', repr(fn))}"
    return hashlib.sha256(f"{name}\n{text}".encode()).hexdigest()[:16]


def distrust(path: str | Path, problem: str, *, strict: bool = False, what: str = "record",
             error: type[ProbekitError] = StoreError) -> None:
    """The one reaction to a record that fails its key or checksum: a warning naming the file (the caller then
    recomputes it), or under ``strict`` a one-line error naming the file."""
    if strict:
        raise error(f"{path}: {what} {problem}. Delete the file, or rerun without --strict to recompute it.")
    log.warning("%s: %s %s; recomputing it.", path, what, problem)
