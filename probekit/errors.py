"""probekit's exception types and "did you mean" helpers.

Every error a user can cause is a :class:`ProbekitError` whose message says what was wrong
(the file, line or value) and what to do. The CLI prints the message as one paragraph and
exits non-zero; the Python API raises the same exception.
"""
from __future__ import annotations

import difflib
from typing import Iterable


class ProbekitError(Exception):
    """Base class for every error probekit raises on bad input or a bad environment."""

    exit_code = 1  # 2 is argparse's: the command line itself could not be parsed


class ConfigError(ProbekitError):
    """An experiment config, CLI option or API argument is invalid."""


class DataError(ProbekitError):
    """A data file is missing, malformed or not what was expected."""


class ModelError(ProbekitError):
    """A model cannot be found, loaded or used as asked."""


class StoreError(ProbekitError):
    """The activation store is corrupt, foreign or locked."""


class TaskError(ProbekitError):
    """A task cannot be built from the data (unknown name, empty split, single label...)."""


def did_you_mean(value: str, choices: Iterable[str], n: int = 3) -> str:
    """Return a ' Did you mean ...?' suffix for an unknown name, or '' when nothing is close."""
    choices = sorted(set(choices))
    close = difflib.get_close_matches(value, choices, n=n, cutoff=0.5)
    if not close:
        lowered = {c.lower(): c for c in choices}
        close = [lowered[c] for c in difflib.get_close_matches(value.lower(), list(lowered), n=n, cutoff=0.5)]
    if not close:
        return ""
    return " Did you mean " + " or ".join(repr(c) for c in close) + "?"


def unknown_name(kind: str, value: str, choices: Iterable[str], cls: type[ProbekitError] = ConfigError,
                 hint: str = "") -> ProbekitError:
    """Build the standard error for an unknown name: what was asked, the closest names, all valid names."""
    choices = sorted(set(choices))
    msg = f"Unknown {kind} {value!r}.{did_you_mean(value, choices)} Valid {kind}s: {', '.join(choices)}."
    if hint:
        msg += " " + hint
    return cls(msg)
