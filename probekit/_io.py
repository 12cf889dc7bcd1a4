"""Files: atomic writes, content hashes and probekit's cache folder, the helpers every stage shares."""
from __future__ import annotations

import hashlib
import os
import tempfile
from functools import lru_cache
from pathlib import Path


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
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
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
