"""The UD treebanks probekit knows by name, and where it finds them.

A dataset's files are looked for in this order:

1. an explicit ``data_dir`` (argument, config key ``data_dir`` or ``--data-dir``);
2. the ``PROBEKIT_DATA_DIR`` environment variable;
3. the user's cache (``$PROBEKIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/probekit``, else ``~/.cache/probekit``);
4. a download of the pinned release from the UniversalDependencies GitHub repository into the
   cache, checked against its sha256 before it is used.

Inside a data folder a treebank may sit at ``<dir>/ud/<repo>/<file>``, ``<dir>/<repo>/<file>`` or
``<dir>/<file>``, so both the project's ``shared/data`` layout and a plain clone of the repository work.
"""
from __future__ import annotations

import logging
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from probekit._io import cache_root, sha256_file
from probekit.data.conllu_io import Sentence, read_conllu
from probekit.errors import DataError, unknown_name

log = logging.getLogger(__name__)

#: Where a treebank file is downloaded from; ``{repo}``, ``{tag}`` and ``{file}`` are filled in.
DEFAULT_URL_TEMPLATE = "https://raw.githubusercontent.com/UniversalDependencies/{repo}/{tag}/{file}"


@dataclass(frozen=True)
class DatasetSpec:
    """A UD treebank release: repository, tag, and the sha256 of every split's file."""

    name: str
    repo: str
    tag: str
    files: dict[str, tuple[str, str]]  # split -> (file name, sha256)
    description: str = ""

    @property
    def splits(self) -> list[str]:
        return list(self.files)


DATASETS: dict[str, DatasetSpec] = {
    "ud_ewt": DatasetSpec(
        name="ud_ewt", repo="UD_English-EWT", tag="r2.16",
        files={
            "train": ("en_ewt-ud-train.conllu", "3fb78e2b55482c8ee00caa653af436c88c9e5bc9a73ce26e4ae3ddc79d2b7e7b"),
            "dev": ("en_ewt-ud-dev.conllu", "531a54ff90d6ab12201c5a50c3e78e6ddac4de69abc4bce5d275d3cd29efe2b6"),
            "test": ("en_ewt-ud-test.conllu", "e266e515a0a7547657ed3d90d9ba46487d6bd251f27ad4269d4e8a427c8555cd"),
        },
        description="UD English Web Treebank r2.16 (CC BY-SA 4.0)"),
    "ud_pud": DatasetSpec(
        name="ud_pud", repo="UD_English-PUD", tag="r2.18",
        files={"test": ("en_pud-ud-test.conllu", "c80584f2bc2b31d5bada78a1136f9feec7ac49e5e18898db02dea434b5b8f0aa")},
        description="UD English PUD, test only (CC BY-SA 3.0)"),
}


def get_spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise unknown_name("dataset", name, DATASETS, DataError)
    return DATASETS[name]


def _candidates(root: Path, spec: DatasetSpec, fname: str) -> list[Path]:
    return [root / "ud" / spec.repo / fname, root / spec.repo / fname, root / fname]


def download_file(url: str, dest: Path, sha256: str, *, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` atomically, verifying its sha256; nothing is left behind on failure."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
    log.info("Downloading %s", url)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(tmp, "wb") as fh:
            while chunk := resp.read(1 << 20):
                fh.write(chunk)
            fh.flush()
            os.fsync(fh.fileno())
        got = sha256_file(tmp)
        if got != sha256:
            raise DataError(f"Downloaded {url} but its sha256 is {got}, expected {sha256}. The file was discarded. "
                            "A proxy or a changed release can cause this; download the file by hand and set "
                            "PROBEKIT_DATA_DIR.")
        os.replace(tmp, dest)
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        raise DataError(f"Could not download {url} ({e}). Without network access, put the treebank under a folder "
                        "and set PROBEKIT_DATA_DIR (or pass data_dir) to it.") from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return dest


def locate(name: str, split: str, *, data_dir: str | os.PathLike | None = None, download: bool = True,
           url_template: str | None = None) -> Path:
    """Return the path of a dataset split's CoNLL-U file, downloading it into the cache if needed."""
    spec = get_spec(name)
    if split not in spec.files:
        raise unknown_name(f"split of {name}", split, spec.files, DataError)
    fname, sha = spec.files[split]
    looked: list[Path] = []
    roots: list[tuple[str, Path]] = []
    if data_dir is not None:
        roots.append(("data_dir", Path(data_dir).expanduser()))
    if os.environ.get("PROBEKIT_DATA_DIR"):
        roots.append(("PROBEKIT_DATA_DIR", Path(os.environ["PROBEKIT_DATA_DIR"]).expanduser()))
    cache = cache_root() / "data"
    roots.append(("cache", cache))
    for _, root in roots:
        for cand in _candidates(root, spec, fname):
            looked.append(cand)
            if cand.is_file():
                return cand
    if not download:
        raise DataError(f"{spec.description}: split {split!r} ({fname}) not found. Looked in: "
                        + ", ".join(str(p) for p in looked)
                        + ". Set PROBEKIT_DATA_DIR to the folder holding the treebank, or allow the download.")
    template = url_template or os.environ.get("PROBEKIT_UD_URL_TEMPLATE") or DEFAULT_URL_TEMPLATE
    url = template.format(repo=spec.repo, tag=spec.tag, file=fname)
    dest = cache / "ud" / spec.repo / fname
    log.info("%s not found locally (looked in %s); downloading release %s", fname,
             ", ".join(str(p) for p in looked), spec.tag)
    try:
        return download_file(url, dest, sha)
    except DataError as e:
        raise DataError(f"{spec.description}: split {split!r} ({fname}) not found locally (looked in: "
                        + ", ".join(str(p) for p in looked) + f") and the download failed. {e}") from None


_checked: set[tuple[str, int, int]] = set()


def _warn_if_not_pinned(name: str, split: str, path: Path) -> None:
    """Warn (once per file version) when a local file is not the release probekit pins (downloads are checked)."""
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key in _checked:
        return
    _checked.add(key)
    spec = get_spec(name)
    fname, sha = spec.files[split]
    got = sha256_file(path)
    if got != sha:
        log.warning("%s is not the %s file of %s %s (sha256 %s..., expected %s...). Results will carry this file's "
                    "checksum but are not comparable with the pinned release.", path, fname, spec.repo, spec.tag,
                    got[:12], sha[:12])


def load_split(name: str, split: str, *, data_dir: str | os.PathLike | None = None, limit: int | None = None,
               download: bool = True) -> list[Sentence]:
    """Load one split of a named dataset as :class:`Sentence` records (parsed copy cached by checksum)."""
    path = locate(name, split, data_dir=data_dir, download=download)
    _warn_if_not_pinned(name, split, path)
    sents = read_conllu(path, cache_dir=cache_root(), limit=limit)
    if not sents:
        raise DataError(f"{path}: split {split!r} of {name} has no sentences. Check the file.")
    return sents


def split_checksum(name: str, split: str, *, data_dir: str | os.PathLike | None = None) -> str:
    """sha256 of the file behind a split (part of every activation store's key)."""
    return sha256_file(locate(name, split, data_dir=data_dir))
