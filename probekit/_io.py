"""Files: atomic writes, content hashes and probekit's cache folder, the helpers every stage shares."""
from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Iterator

from probekit.errors import ConfigError, DataError, ProbekitError

log = logging.getLogger(__name__)

#: A name that becomes one path component: letters, digits, '-', '_', '.', not only dots.
_NAME = re.compile(r"[A-Za-z0-9_.-]+")


def check_name(text, what: str) -> str:
    """``text`` when it is one path component (letters, digits, ``-``, ``_``, ``.``; not ``.`` or ``..``), else a
    ConfigError: user text that becomes a path (an experiment name, a split name) never leaves its folder."""
    if not isinstance(text, str) or not _NAME.fullmatch(text) or set(text) == {"."}:
        raise ConfigError(f"{what} must be one name of letters, digits, '-', '_' and '.' (no '/', no '..'); got "
                          f"{text!r}.")
    return text


def acquire_lock(path: Path, what: str, error: type[ProbekitError]):
    """Take the file lock ``path`` that guards ``what`` and return it (the caller releases it). While another
    process holds it, wait (``PROBEKIT_LOCK_TIMEOUT`` seconds, default an hour), then raise ``error`` naming the lock
    file."""
    from filelock import FileLock, Timeout

    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=0)
        return lock
    except Timeout:
        log.warning("%s is in use by another probekit process (lock file %s); waiting for it to finish", what, path)
    try:
        lock.acquire(timeout=int(os.environ.get("PROBEKIT_LOCK_TIMEOUT", "3600")))
    except Timeout:
        raise error(f"{what} is locked by another probekit process (lock file {path}). Wait for it to finish; if no "
                    "other process runs, delete the lock file.") from None
    return lock


def disk_full_error(path: Path, nbytes: int, err: OSError) -> OSError:
    """The OSError to raise when writing ``nbytes`` to ``path`` ran out of space: it names the path, the bytes needed
    and the space free there (the bare ENOSPC names neither)."""
    try:
        free = f"{shutil.disk_usage(Path(path).parent).free} bytes free there"
    except OSError:
        free = "free space unknown"
    return OSError(err.errno, f"No space left on device writing {path}: {nbytes} bytes needed, {free}. Free some "
                              "space, or point the output elsewhere")


def cache_root() -> Path:
    """probekit's user cache folder (models, parsed corpora, downloads, activation stores)."""
    if os.environ.get("PROBEKIT_CACHE_DIR"):
        return Path(os.environ["PROBEKIT_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "probekit"


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, read once per file version in a process: loading a split hashes its file for the
    pinned-release check, the parse cache key and the data fingerprint, and those three callers share this memo
    (keyed by path, size and modification time)."""
    p = Path(path)
    st = p.stat()
    return _sha256_of(str(p.resolve()), st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=256)
def _sha256_of(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: temporary file in the same folder, fsync, rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp makes the file private (0600); give it the mode open() would (0644 under the usual umask 022), so
        # that collaborators can read results, tables and saved probes
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise disk_full_error(path, len(data), e) from None
        raise


def _umask() -> int:
    """The process umask, read without changing it where Linux reports it (os.umask can only be read by setting it,
    which would race with other threads creating files)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def utf8_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """``(line number, line)`` of a UTF-8 text file, a leading byte-order mark dropped; a DataError naming the file and
    line when a line is not UTF-8."""
    path = Path(path)
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"{path}:{lineno}: not valid UTF-8 ({e.reason} at byte {e.start} of the line). Save "
                                "the file as UTF-8, e.g. with `iconv -f latin1 -t utf-8`.") from None
            yield lineno, line.removeprefix("\ufeff") if lineno == 1 else line


def read_input_lines(path: str | Path) -> list[str]:
    """The non-empty lines of a UTF-8 text file, stripped (``probekit predict --input``); DataError naming the file
    and line when a line is not UTF-8."""
    return [line.strip() for _, line in utf8_lines(path) if line.strip()]
