"""Activation store integrity: every kind of damage is found before a vector is used (issue 7).

A clean store of the tiny BERT over 40 EWT dev sentences (about 8 shards) is built once; each
test copies it, damages one file, and checks the three ways the store is used:

* ``extract`` again (default): a warning naming the damaged file, that shard recomputed, and the
  repaired store byte-identical to the clean one;
* ``extract(strict=True)``: a :class:`StoreError` naming the file, nothing recomputed;
* opening the folder directly with :class:`ActivationStore` and reading it: a StoreError naming
  the file (never wrong vectors).
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from probekit.activations.store import ActivationStore, plan_shards, read_json, verify_shard, write_shard
from probekit.errors import ConfigError, StoreError

SHARD_WORDS = 40
DAMAGED_SHARD = "shard-00003"


# ------------------------------------------------------------------------------------------- helpers

def npy_digests(store_dir: Path) -> dict[str, str]:
    """sha256 of every committed ``.npy`` file, by path relative to the store folder."""
    return {str(p.relative_to(store_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(store_dir.glob("shard-*/*.npy"))}


def manifest_checksums(store_dir: Path) -> list:
    m = json.loads((store_dir / "manifest.json").read_text())
    return [(s["name"], {f: i["sha256"] for f, i in sorted(s["files"].items())}) for s in m["shards"]]


def copy_store(src: Path, root: Path) -> Path:
    """Copy a store folder under another root, keeping its name (same content key)."""
    dest = root / src.name
    shutil.copytree(src, dest)
    return dest


def read_everything(store: ActivationStore) -> None:
    for layer in range(store.n_layers):
        store.layer(layer)
        for pooling in store.sentence_poolings:
            store.sentence_vectors(pooling, layer)


# ------------------------------------------------------------------------------------------- fixtures

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def bert(tiny_bert_dir):
    from probekit.activations.models import load_model

    return load_model(str(tiny_bert_dir), device="cpu")


@pytest.fixture(scope="module")
def clean(bert, mini_sents, tmp_path_factory) -> ActivationStore:
    from probekit.activations.extract import extract

    return extract(bert, mini_sents, store_root=tmp_path_factory.mktemp("clean"), shard_words=SHARD_WORDS,
                   progress=False)


def do_extract(bert, sentences, root: Path, **kw) -> ActivationStore:
    from probekit.activations.extract import extract

    return extract(bert, sentences, store_root=root, shard_words=SHARD_WORDS, progress=False, **kw)


# ------------------------------------------------------------------------------------------- damage kinds

def _truncate(d: Path) -> Path:
    p = d / DAMAGED_SHARD / "words.npy"
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    return p


def _flip_byte(d: Path) -> Path:
    p = d / DAMAGED_SHARD / "words.npy"
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0x01  # the middle of the data block, far past the .npy header
    p.write_bytes(bytes(data))
    return p


def _foreign_other_shape(d: Path) -> Path:
    p = d / DAMAGED_SHARD / "words.npy"
    np.save(p, np.zeros((3, 7, 32), dtype=np.float16))
    return p


def _foreign_same_shape(d: Path) -> Path:
    """Another shard's words of the same shape would pass a shape check; the checksum must catch it."""
    p = d / DAMAGED_SHARD / "words.npy"
    arr = np.load(p)
    np.save(p, (np.random.default_rng(0).standard_normal(arr.shape)).astype(arr.dtype))
    return p


def _delete_words(d: Path) -> Path:
    p = d / DAMAGED_SHARD / "words.npy"
    p.unlink()
    return p


def _delete_sentence_file(d: Path) -> Path:
    p = d / DAMAGED_SHARD / "sent-mean.npy"
    p.unlink()
    return p


SHARD_DAMAGE = {
    "truncated": _truncate,
    "flipped_byte": _flip_byte,
    "foreign_other_shape": _foreign_other_shape,
    "foreign_same_shape": _foreign_same_shape,
    "deleted_words_file": _delete_words,
    "deleted_sentence_file": _delete_sentence_file,
}


# ------------------------------------------------------------------------------------------- shard damage

@pytest.mark.parametrize("kind", sorted(SHARD_DAMAGE))
def test_damaged_shard_is_recomputed_with_warning(kind, clean, bert, mini_sents, tmp_path, caplog):
    store_dir = copy_store(clean.path, tmp_path)
    bad = SHARD_DAMAGE[kind](store_dir)
    with caplog.at_level(logging.WARNING, logger="probekit"):
        st = do_extract(bert, mini_sents, tmp_path)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any(str(bad) in w for w in warnings), f"no warning names {bad}: {warnings}"
    assert st.computed_shards == 1, "only the damaged shard is recomputed"
    assert npy_digests(store_dir) == npy_digests(clean.path), "the repaired store differs from the clean one"
    assert manifest_checksums(store_dir) == manifest_checksums(clean.path)
    read_everything(ActivationStore(store_dir))


@pytest.mark.parametrize("kind", sorted(SHARD_DAMAGE))
def test_damaged_shard_strict_raises_naming_file(kind, clean, bert, mini_sents, tmp_path):
    store_dir = copy_store(clean.path, tmp_path)
    bad = SHARD_DAMAGE[kind](store_dir)
    before = npy_digests(store_dir)
    with pytest.raises(StoreError) as ei:
        do_extract(bert, mini_sents, tmp_path, strict=True)
    assert str(bad) in str(ei.value)
    assert npy_digests(store_dir) == before, "strict mode must not touch the store"


@pytest.mark.parametrize("kind", sorted(SHARD_DAMAGE))
def test_damaged_shard_never_read_as_vectors(kind, clean, tmp_path):
    """A store damaged after extraction and opened directly (notebook, sweep) raises, naming the file."""
    store_dir = copy_store(clean.path, tmp_path)
    bad = SHARD_DAMAGE[kind](store_dir)
    with pytest.raises(StoreError) as ei:
        read_everything(ActivationStore(store_dir))
    assert str(bad) in str(ei.value)
    with pytest.raises(StoreError, match=re.escape(str(bad))):
        ActivationStore(store_dir).verify_all()


def test_deleted_shard_folder_is_recomputed(clean, bert, mini_sents, tmp_path):
    store_dir = copy_store(clean.path, tmp_path)
    shutil.rmtree(store_dir / DAMAGED_SHARD)
    with pytest.raises(StoreError, match="missing|unreadable"):
        read_everything(ActivationStore(store_dir))
    st = do_extract(bert, mini_sents, tmp_path)
    assert st.computed_shards == 1
    assert npy_digests(store_dir) == npy_digests(clean.path)


def test_verify_shard_reports_each_problem(clean):
    metas = {m["name"]: m for m in clean.manifest["shards"]}
    meta = metas[DAMAGED_SHARD]
    assert verify_shard(clean.path, meta) is None
    assert "malformed" in verify_shard(clean.path, {"name": DAMAGED_SHARD})
    assert "malformed" in verify_shard(clean.path, ["not", "a", "dict"])
    assert "lacks sent-xyz.npy" in verify_shard(clean.path, meta, expected={"words.npy", "sent-xyz.npy"})
    foreign = {**meta, "key": "0" * 20}
    assert "foreign" in verify_shard(clean.path, foreign, key="1" * 20)
    other = metas["shard-00000"]
    # a record claiming another shard's checksums (a shard folder swapped in from elsewhere)
    swapped = {**meta, "files": other["files"]}
    assert verify_shard(clean.path, swapped) is not None


# ------------------------------------------------------------------------------------------- manifest damage

MANIFEST_DAMAGE = {
    "binary_garbage": b"\xff\xfe\x00\x13garbage\x00",
    "text_garbage": b"{\"format\": 2, \"shards\": [",
    "json_list": b"[1, 2, 3]",
    "empty": b"",
}


def _manifest_cases(strict: bool):
    out = []
    for kind in sorted(MANIFEST_DAMAGE):
        out.append(kind)
    return out


@pytest.mark.parametrize("kind", _manifest_cases(strict=False))
def test_garbage_manifest_is_rebuilt_with_warning(kind, clean, bert, mini_sents, tmp_path, caplog):
    store_dir = copy_store(clean.path, tmp_path)
    mpath = store_dir / "manifest.json"
    mpath.write_bytes(MANIFEST_DAMAGE[kind])
    with pytest.raises(StoreError, match="manifest.json"):
        ActivationStore(store_dir)
    with caplog.at_level(logging.WARNING, logger="probekit"):
        st = do_extract(bert, mini_sents, tmp_path)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any(str(mpath) in w for w in warnings), warnings
    assert st.computed_shards == 0, "every shard is intact: rebuilt from the shard folders, no forward pass"
    assert npy_digests(store_dir) == npy_digests(clean.path)
    assert manifest_checksums(store_dir) == manifest_checksums(clean.path)


@pytest.mark.parametrize("kind", _manifest_cases(strict=True))
def test_garbage_manifest_strict_raises(kind, clean, bert, mini_sents, tmp_path):
    store_dir = copy_store(clean.path, tmp_path)
    mpath = store_dir / "manifest.json"
    mpath.write_bytes(MANIFEST_DAMAGE[kind])
    with pytest.raises(StoreError, match=re.escape(str(mpath))):
        do_extract(bert, mini_sents, tmp_path, strict=True)


def test_garbage_manifest_and_damaged_meta(clean, bert, mini_sents, tmp_path, caplog):
    """With the manifest gone, each shard is checked against its own meta.json; a bad one is recomputed."""
    store_dir = copy_store(clean.path, tmp_path)
    (store_dir / "manifest.json").write_bytes(b"\x00")
    (store_dir / DAMAGED_SHARD / "meta.json").write_bytes(b"\xff not json")
    _flip_byte(store_dir)  # words.npy of the same shard
    other = store_dir / "shard-00001" / "words.npy"
    data = bytearray(other.read_bytes())
    data[-3] ^= 0x10
    other.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="probekit"):
        st = do_extract(bert, mini_sents, tmp_path)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert str(store_dir / DAMAGED_SHARD / "meta.json") in text and str(other) in text
    assert st.computed_shards == 2
    assert npy_digests(store_dir) == npy_digests(clean.path)


def test_manifest_not_covering_corpus_is_refused(clean, tmp_path):
    """A manifest that drops a shard but says complete would silently shorten the corpus: refused."""
    store_dir = copy_store(clean.path, tmp_path)
    m = json.loads((store_dir / "manifest.json").read_text())
    del m["shards"][2]
    (store_dir / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(StoreError, match="inconsistent"):
        ActivationStore(store_dir)


def test_read_json(tmp_path):
    p = tmp_path / "x.json"
    assert read_json(p) is None
    for bad in (b"\xff\xfe", b"{", b"[]", b"3", b""):
        p.write_bytes(bad)
        assert read_json(p) is None, bad
    p.write_text('{"a": 1}')
    assert read_json(p) == {"a": 1}


# ------------------------------------------------------------------------------------------- reading

def test_layer_out_of_range_names_valid_range(clean):
    n = clean.n_layers
    for bad in (99, n, -n - 1):
        with pytest.raises(ConfigError, match=rf"valid layers are 0\.\.{n - 1}"):
            clean.layer(bad)
    with pytest.raises(ConfigError, match="not an integer"):
        clean.layer(1.0)
    with pytest.raises(ConfigError, match="Did you mean 'mean'"):
        clean.sentence_vectors("meen", 0)
    np.testing.assert_array_equal(clean.layer(-1), clean.layer(n - 1))
    assert clean.layer(0).shape == (clean.n_words, clean.hidden_size)


def test_open_errors(tmp_path, bert, mini_sents):
    with pytest.raises(StoreError, match="not an activation store"):
        ActivationStore(tmp_path)
    from probekit.activations.extract import extract

    with pytest.raises(StoreError, match="stopped after 2 of"):
        extract(bert, mini_sents, store_root=tmp_path, shard_words=SHARD_WORDS, progress=False,
                _stop_after_shards=2)
    (store_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    with pytest.raises(StoreError, match="incomplete.*resume"):
        ActivationStore(store_dir)


def test_write_shard_is_atomic(tmp_path):
    arr = np.arange(2 * 5 * 4, dtype=np.float16).reshape(2, 5, 4)
    meta = write_shard(tmp_path, 7, {"words": arr}, {"sent_start": 0, "sent_end": 1}, key="k")
    assert [p.name for p in tmp_path.iterdir()] == ["shard-00007"]
    assert verify_shard(tmp_path, meta, key="k") is None
    assert read_json(tmp_path / "shard-00007" / "meta.json") == meta
    np.testing.assert_array_equal(np.load(tmp_path / "shard-00007" / "words.npy"), arr)
    # rewriting a shard replaces the old copy
    meta2 = write_shard(tmp_path, 7, {"words": arr + 1}, {"sent_start": 0, "sent_end": 1}, key="k")
    assert meta2["files"] != meta["files"] and verify_shard(tmp_path, meta2) is None
    assert verify_shard(tmp_path, meta) is not None


def test_write_shard_digests_every_layer_of_every_file(tmp_path):
    # files and layers are written and hashed on several threads: each digest must land on its own file and layer
    arrays = {f"a{k}": np.random.default_rng(k).random((5, 7, 3)).astype(np.float16) for k in range(4)}
    meta = write_shard(tmp_path, 0, arrays, {})
    for stem, arr in arrays.items():
        assert meta["files"][f"{stem}.npy"]["sha256"] == [hashlib.sha256(arr[i].tobytes()).hexdigest()
                                                          for i in range(5)]


def test_write_shard_disk_full_names_shard_and_leaves_nothing(tmp_path, monkeypatch):
    import errno

    import probekit.activations.store as store

    real = store.os.fsync
    calls = []

    def full_on_second(fd):
        calls.append(fd)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd)

    monkeypatch.setattr(store.os, "fsync", full_on_second)
    arrays = {f"a{k}": np.zeros((2, 3, 4), dtype=np.float16) for k in range(3)}
    with pytest.raises(OSError, match=r"No space left on device writing .*shard-00003: 144 bytes needed"):
        write_shard(tmp_path, 3, arrays, {})
    assert list(tmp_path.iterdir()) == [], "no temporary folder and no shard left behind"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 40), min_size=1, max_size=60), st.integers(1, 100))
def test_plan_shards_covers_every_sentence_once(words, max_words):
    plans = plan_shards(words, max_words=max_words)
    assert plans[0].sent_start == 0 and plans[-1].sent_end == len(words)
    assert plans[-1].word_end == sum(words)
    for a, b in zip(plans, plans[1:]):
        assert a.sent_end == b.sent_start and a.word_end == b.word_start
    for k, p in enumerate(plans):
        assert p.index == k and p.sent_end > p.sent_start
        assert p.word_end - p.word_start == sum(words[p.sent_start:p.sent_end])
        assert p.word_end - p.word_start <= max_words or p.sent_end - p.sent_start == 1


def test_a_commit_that_fails_on_the_commit_thread_stops_the_run_and_resumes(tmp_path, bert, mini_sents, monkeypatch):
    # shard k is committed on a thread while shard k+1 is computed: the commit's error must reach the caller, at most
    # the shards before it stay committed, nothing half-written is left, and the store lock is free for the rerun
    import errno

    import probekit.activations.writer as writer
    from probekit.activations.extract import extract

    real, calls = writer.write_shard, []

    def full_on_third(store_dir, index, *a, **k):
        calls.append(index)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(store_dir, index, *a, **k)

    monkeypatch.setattr(writer, "write_shard", full_on_third)
    with pytest.raises(OSError, match="No space left"):
        extract(bert, mini_sents, store_root=tmp_path, shard_words=SHARD_WORDS, progress=False)
    (store_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert sorted(p.name for p in store_dir.glob("shard-*")) == ["shard-00000", "shard-00001"]
    assert not list(store_dir.glob(".tmp-*"))
    monkeypatch.setattr(writer, "write_shard", real)
    store = extract(bert, mini_sents, store_root=tmp_path, shard_words=SHARD_WORDS, progress=False)
    assert store.computed_shards == len(store.manifest["shards"]) - 2
    fresh = extract(bert, mini_sents, store_root=tmp_path / "fresh", shard_words=SHARD_WORDS, progress=False)
    np.testing.assert_array_equal(store.layer(-1), fresh.layer(-1))
