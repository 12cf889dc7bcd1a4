"""The UD treebanks probekit knows by name, and where it finds them.

Names: ``ud_ewt`` and ``ud_pud`` (pinned releases with known checksums), and any treebank of
:mod:`probekit.data.ud_names` as ``ud:de_gsd`` or by its repository folder ``UD_German-GSD`` (release
:data:`~probekit.data.ud_names.UD_RELEASE`; ``ud:en_ewt`` and ``ud:en_pud`` are the pinned ones).

A dataset's files are looked for in this order:

1. an explicit ``data_dir`` (argument, config key ``data_dir`` or ``--data-dir``);
2. the ``PROBEKIT_DATA_DIR`` environment variable;
3. the user's cache (``$PROBEKIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/probekit``, else ``~/.cache/probekit``);
4. a download of the release from the UniversalDependencies GitHub repository into the cache, checked against its
   sha256 before it is used.

Checksums: the pinned releases carry their files' sha256 here. For the other treebanks no official checksum can be
known in advance, so they are trusted on first use: the first download's sha256 is recorded in
``<cache>/data/ud/checksums.json``, and every later download of that file, and the cached copy each time it is used,
must match it (else a :class:`~probekit.errors.DataError`; a failed download is discarded). Any other copy that differs
from the pinned or recorded checksum (in a data folder, or a pinned file in the cache) is used with a warning: it may
be another release, and results carry its checksum.

Inside a data folder a treebank may sit at ``<dir>/ud/<repo>/<file>``, ``<dir>/<repo>/<file>`` or
``<dir>/<file>``, so both the project's ``shared/data`` layout and a plain clone of the repository work.
"""
from __future__ import annotations

import json
import logging
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from probekit._io import acquire_lock, atomic_write_bytes, cache_root, sha256_file
from probekit.data.conllu_io import Sentence, read_conllu
from probekit.data.ud_names import PREFIX, UD_RELEASE, is_ud_name, resolve
from probekit.errors import DataError, ProbekitError, unknown_name

log = logging.getLogger(__name__)

#: Where a treebank file is downloaded from; ``{repo}``, ``{tag}`` and ``{file}`` are filled in.
DEFAULT_URL_TEMPLATE = "https://raw.githubusercontent.com/UniversalDependencies/{repo}/{tag}/{file}"


@dataclass(frozen=True)
class DatasetSpec:
    """A UD treebank release: repository, tag, and every split's file with its sha256 (None: trusted on first use,
    see the module doc)."""

    name: str
    repo: str
    tag: str
    files: dict[str, tuple[str, str | None]]  # split -> (file name, sha256 or None)
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


def get_spec(name: str, error: type[ProbekitError] = DataError) -> DatasetSpec:
    """The release behind a dataset name (see the module doc); an unknown name is ``error`` with the close names."""
    if name in DATASETS:
        return DATASETS[name]
    if not is_ud_name(name):
        raise unknown_name("dataset", name, DATASETS, error,
                           hint=f"Or a UD treebank by name, e.g. {PREFIX}de_gsd or UD_German-GSD (docs/data.md).")
    code, folder = resolve(name, error)
    pinned = [spec for spec in DATASETS.values() if spec.repo == folder]
    if pinned:
        return pinned[0]
    return DatasetSpec(name=PREFIX + code, repo=folder, tag=UD_RELEASE,
                       files={split: (f"{code}-ud-{split}.conllu", None) for split in ("train", "dev", "test")},
                       description=f"UD {folder.removeprefix('UD_')} {UD_RELEASE}")


def dataset_name(name: str, error: type[ProbekitError] = DataError) -> str:
    """The one name of a dataset, however it was written (``UD_German-GSD`` and ``ud:de_gsd`` are ``ud:de_gsd``;
    ``ud:en_ewt`` is ``ud_ewt``): the name stores and results carry."""
    return get_spec(name, error).name


# ----------------------------------------------------------------------------------- trusted on first use

def checksums_file() -> Path:
    """Where the sha256 of first downloads are recorded (one JSON mapping ``repo/tag/file`` -> sha256)."""
    return cache_root() / "data" / "ud" / "checksums.json"


def _read_checksums(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: the recorded download checksums are unreadable ({e}). Delete the file: the next "
                        "downloads are then trusted and recorded anew.") from None
    if not isinstance(table, dict):
        raise DataError(f"{path}: expected a JSON mapping of files to sha256; delete the file to record them anew.")
    return table


def _record_key(spec: DatasetSpec, fname: str) -> str:
    return f"{spec.repo}/{spec.tag}/{fname}"


def expected_sha256(spec: DatasetSpec, split: str) -> str | None:
    """The sha256 a split's file must have: the pinned one, else the one recorded at its first download, else None."""
    fname, sha = spec.files[split]
    return sha or _read_checksums(checksums_file()).get(_record_key(spec, fname))


def _record_sha256(spec: DatasetSpec, fname: str, sha: str) -> None:
    path = checksums_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = acquire_lock(path.with_name(path.name + ".lock"), f"the download checksums {path}", DataError)
    try:
        table = _read_checksums(path)
        table[_record_key(spec, fname)] = sha
        atomic_write_bytes(path, (json.dumps(table, indent=1, sort_keys=True) + "\n").encode())
    finally:
        lock.release()


def _candidates(root: Path, spec: DatasetSpec, fname: str) -> list[Path]:
    return [root / "ud" / spec.repo / fname, root / spec.repo / fname, root / fname]


def download_file(url: str, dest: Path, sha256: str | None, *, timeout: float = 60.0, why: str = "") -> Path:
    """Download ``url`` to ``dest`` atomically, verifying its sha256 when one is given (``why`` says, in the error,
    where that checksum comes from); nothing is left behind on failure."""
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
        if sha256 is not None and got != sha256:
            raise DataError(f"Downloaded {url} but its sha256 is {got}, expected {sha256}{why}. The file was "
                            "discarded. A proxy or a changed release can cause this; download the file by hand and set "
                            "PROBEKIT_DATA_DIR.")
        os.replace(tmp, dest)
    except urllib.error.HTTPError as e:
        raise DataError(f"Could not download {url} (HTTP {e.code} {e.reason})"
                        + (": the release has no such file." if e.code == 404 else ".")) from None
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
                _check_local(spec, split, cand, in_cache=root == cache)
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
    expected = expected_sha256(spec, split)
    why = "" if sha else (f" (the sha256 of its first download, recorded in {checksums_file()}; if the release was "
                          "re-tagged on purpose, delete that line)")
    try:
        path = download_file(url, dest, expected, why=why)
    except DataError as e:
        raise DataError(f"{spec.description}: split {split!r} ({fname}) not found locally (looked in: "
                        + ", ".join(str(p) for p in looked) + f") and the download failed. {e}"
                        + ("" if sha else " Not every UD treebank has train, dev and test splits.")) from None
    if expected is None:
        _record_sha256(spec, fname, sha256_file(path))
        log.info("Recorded the sha256 of %s in %s: later downloads and the cached copy must match it", fname,
                 checksums_file())
    return path


_checked: set[tuple[str, int, int]] = set()


def _check_local(spec: DatasetSpec, split: str, path: Path, *, in_cache: bool) -> None:
    """Check a found file against the pinned or recorded sha256 (once per file version): the cached copy of a file
    trusted on first use that fails its record changed after its download (DataError); any other copy that differs
    may be another release (a warning: results carry its checksum, as they always do)."""
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key in _checked:
        return
    fname, pinned = spec.files[split]
    expected = expected_sha256(spec, split)
    got = sha256_file(path)
    if expected is None:
        if in_cache:
            log.warning("%s has no recorded checksum for %s %s (downloaded for another release?): it is used "
                        "unchecked. Delete it to download %s.", path, spec.repo, spec.tag, spec.tag)
    elif got != expected:
        if in_cache and not pinned:
            raise DataError(f"{path}: sha256 {got} differs from its first download's {expected} (recorded in "
                            f"{checksums_file()}): the cached file changed after its download. Delete it to download "
                            "it again.")
        log.warning("%s is not the %s file of %s %s (sha256 %s..., expected %s...). Results will carry this file's "
                    "checksum but are not comparable with the %s release.", path, fname, spec.repo, spec.tag,
                    got[:12], expected[:12], "pinned" if pinned else "downloaded")
    _checked.add(key)


def load_split(name: str, split: str, *, data_dir: str | os.PathLike | None = None, limit: int | None = None,
               download: bool = True) -> list[Sentence]:
    """Load one split of a named dataset as :class:`Sentence` records (parsed copy cached by checksum)."""
    path = locate(name, split, data_dir=data_dir, download=download)
    sents = read_conllu(path, cache_dir=cache_root(), limit=limit)
    if not sents:
        raise DataError(f"{path}: split {split!r} of {name} has no sentences. Check the file.")
    return sents


def split_checksum(name: str, split: str, *, data_dir: str | os.PathLike | None = None) -> str:
    """sha256 of the file behind a split (part of every activation store's key)."""
    return sha256_file(locate(name, split, data_dir=data_dir))
