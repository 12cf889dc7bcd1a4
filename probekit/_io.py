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
