"""Nothing silently wrong (issue 21): every cached thing is trusted by its content, results stay in their folder.

One test (or a few) per numbered case of docs/failures.md "Nothing silently wrong"; each failed on the code
before the fix.
"""
from __future__ import annotations

import errno
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tiny import small_conllu

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def no_figures(monkeypatch):
    import probekit.report.figures as figures

    monkeypatch.setattr(figures, "experiment_figures", lambda *a, **k: [])


def small_cfg(tiny_bert_dir, ewt_dev, tmp_path, **over):
    from probekit.config import ExperimentConfig

    kw = dict(name="trust", models=[str(tiny_bert_dir)], dataset="conllu",
              files=small_conllu(ewt_dev, tmp_path / "data"), tasks=["aux_verb", "upos"], Cs=[1.0],
              control_tasks=False, mdl=False, random_baseline=False, figures=[], device="cpu",
              store_dir=str(tmp_path / "stores"), results_dir=str(tmp_path / "results"))
    kw.update(over)
    return ExperimentConfig(**kw)


# ------------------------------------------------------------------------------- 1. a changed task rule

def _write_task(folder: Path, params: dict | None, label_fn: str = "upos") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    spec = {"name": "mytask", "level": "word", "labels": ["NOUN", "VERB"], "label_fn": label_fn, "version": 1}
    if params is not None:
        spec["params"] = params
    import yaml

    (folder / "mytask.yaml").write_text(yaml.safe_dump(spec))


def test_changed_task_rule_changes_the_unit_keys(tiny_bert_dir, ewt_dev, tmp_path, monkeypatch):
    import probekit.tasks.base as base
    from probekit.activations.models import fingerprint
    from probekit.runner.data import load_data
    from probekit.runner.units import plan_units

    cfg = small_cfg(tiny_bert_dir, ewt_dev, tmp_path, tasks=["mytask"])
    _, data_fp = load_data(cfg)
    monkeypatch.setenv("PROBEKIT_TASKS_PATH", str(tmp_path / "tasks"))

    def keys():
        base._all_tasks.cache_clear()
        return [u.key for u in plan_units(cfg, str(tiny_bert_dir), fingerprint(str(tiny_bert_dir)), data_fp)]

    _write_task(tmp_path / "tasks", None, label_fn="upos")
    a = keys()
    _write_task(tmp_path / "tasks", None, label_fn="upos")
    assert keys() == a, "the same YAML content gives the same keys"
    _write_task(tmp_path / "tasks", {"collapse": True}, label_fn="upos")  # same name and version, another rule
    assert keys() != a
    _write_task(tmp_path / "tasks", None, label_fn="tense")
    assert keys() != a
    base._all_tasks.cache_clear()


def test_label_function_code_is_part_of_the_task_fingerprint():
    from probekit.tasks.base import Task

    def rule_a(s):
        return ["x"] * len(s)

    def rule_b(s):
        return ["y"] * len(s)

    ta = Task(name="t", level="word", labels=["x", "y"], label_fn=rule_a)
    tb = Task(name="t", level="word", labels=["x", "y"], label_fn=rule_b)
    assert ta.fingerprint != tb.fingerprint
    assert ta.fingerprint == Task(name="t", level="word", labels=["x", "y"], label_fn=rule_a).fingerprint


# ------------------------------------------------------------------------------- 2. the parsed-treebank cache

def test_parse_cache_flipped_byte_is_reparsed_with_a_warning(ewt_dev, tmp_path, caplog):
    from probekit.data.conllu_io import read_conllu

    files = small_conllu(ewt_dev, tmp_path / "data")
    good = read_conllu(files["train"], cache_dir=tmp_path / "cache")
    (entry,) = list((tmp_path / "cache" / "parsed").glob("*.pkl"))
    blob = bytearray(entry.read_bytes())
    # flip one byte of a word inside the payload (the pickled sentences)
    i = blob.find(ewt_dev[0].words[0].encode())
    blob[i] ^= 0x20
    entry.write_bytes(bytes(blob))
    with caplog.at_level(logging.WARNING):
        again = read_conllu(files["train"], cache_dir=tmp_path / "cache")
    assert [s.words for s in again] == [s.words for s in good]
    assert str(entry) in caplog.text


def test_parse_cache_of_another_file_is_not_used(ewt_dev, tmp_path, caplog):
    from probekit.data.conllu_io import read_conllu
    from probekit.errors import DataError

    files = small_conllu(ewt_dev, tmp_path / "data")
    dev = read_conllu(files["dev"], cache_dir=tmp_path / "cache")
    test = read_conllu(files["test"], cache_dir=tmp_path / "cache")
    entries = {p.stat().st_mtime_ns: p for p in (tmp_path / "cache" / "parsed").glob("*.pkl")}
    dev_entry, test_entry = (entries[k] for k in sorted(entries))
    shutil.copy(dev_entry, test_entry)  # the dev file's entry in the test file's place
    with caplog.at_level(logging.WARNING):
        again = read_conllu(files["test"], cache_dir=tmp_path / "cache")
    assert [s.sent_id for s in again] == [s.sent_id for s in test] != [s.sent_id for s in dev]
    assert str(test_entry) in caplog.text
    shutil.copy(dev_entry, test_entry)
    with pytest.raises(DataError, match=str(test_entry)):
        read_conllu(files["test"], cache_dir=tmp_path / "cache", strict=True)


# ------------------------------------------------------------------------------- 3. a unit file copied over another

def test_unit_file_copied_over_another_is_recomputed(tmp_path, caplog):
    from probekit.results.table import load_unit, row, save_unit

    a, b = tmp_path / "runs" / "aaaa.json", tmp_path / "runs" / "bbbb.json"
    save_unit(a, [row(experiment="e", model="m", task="t1", layer=0, metric="accuracy", value=0.5, seed=0)])
    save_unit(b, [row(experiment="e", model="m", task="t2", layer=0, metric="accuracy", value=0.7, seed=0)])
    assert load_unit(b)[0]["task"] == "t2"
    shutil.copy(a, b)
    with caplog.at_level(logging.WARNING):
        assert load_unit(b) is None
    assert str(b) in caplog.text


# ------------------------------------------------------------------------------- 4. names are names

@pytest.mark.parametrize("name", ["../x", "/tmp/abs", "a/b", "..", ".", "", "a b", "x\x00"])
def test_experiment_name_is_one_path_component(name):
    from probekit.config import ExperimentConfig
    from probekit.errors import ConfigError

    with pytest.raises(ConfigError, match="name"):
        ExperimentConfig(name=name)


def test_good_experiment_names_pass():
    from probekit.config import ExperimentConfig

    for name in ("quickstart", "exp-1_v2.0", "A.b"):
        assert ExperimentConfig(name=name).name == name


def test_task_name_is_one_path_component(tmp_path):
    import yaml

    from probekit.errors import TaskError
    from probekit.tasks.base import load_task_file

    spec = {"name": "../evil", "level": "word", "labels": ["a", "b"], "label_fn": "upos"}
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(TaskError, match="name"):
        load_task_file(tmp_path / "t.yaml")


@pytest.mark.parametrize("split", ["../x", "a/b"])
def test_split_name_cannot_leave_the_store_root(tiny_bert_dir, mini_sents, tmp_path, split):
    from probekit.activations.extract import extract
    from probekit.activations.models import load_model
    from probekit.errors import ConfigError

    lm = load_model(str(tiny_bert_dir), device="cpu")
    with pytest.raises(ConfigError, match="split"):
        extract(lm, mini_sents[:3], split=split, store_root=tmp_path / "stores", progress=False)


# ------------------------------------------------------------------------------- 5, 9, 10. the results folder

def test_killed_rerun_with_changed_config_leaves_no_committed_mix(tiny_bert_dir, ewt_dev, tmp_path, monkeypatch,
                                                                  no_figures):
    import probekit.results.table as table
    import probekit.runner.experiment as exp
    from probekit.errors import DataError

    cfg = small_cfg(tiny_bert_dir, ewt_dev, tmp_path, tasks=["aux_verb"])
    res = exp.run_experiment(cfg, progress=False)
    assert table.load_results(res.folder)["task"].unique().tolist() == ["aux_verb"]
    cfg2 = small_cfg(tiny_bert_dir, ewt_dev, tmp_path, tasks=["aux_verb", "upos"])
    orig = exp.write_csv

    def killed_after_results(df, path):
        orig(df, path)
        if Path(path).name == "results.csv":
            raise KeyboardInterrupt  # killed after results.csv, before summary.csv and provenance.json
    monkeypatch.setattr(exp, "write_csv", killed_after_results)
    with pytest.raises(KeyboardInterrupt):
        exp.run_experiment(cfg2, progress=False)
    # the new results.csv sits beside the old summary and provenance: the folder must not claim it is one result
    with pytest.raises(DataError, match="not committed"):
        table.load_results(res.folder)
    monkeypatch.setattr(exp, "write_csv", orig)
    res3 = exp.run_experiment(cfg2, progress=False)
    assert set(table.load_results(res3.folder)["task"]) == {"aux_verb", "upos"}
    prov = json.loads((res3.folder / "provenance.json").read_text())
    assert prov["config"]["tasks"] == ["aux_verb", "upos"]


def test_temporaries_of_a_killed_run_are_removed(tiny_bert_dir, ewt_dev, tmp_path, no_figures):
    import probekit.runner.experiment as exp

    cfg = small_cfg(tiny_bert_dir, ewt_dev, tmp_path, tasks=["aux_verb"])
    folder = Path(cfg.results_dir) / cfg.name
    (folder / "runs").mkdir(parents=True)
    leftovers = [folder / "runs" / ".abc.json.x1y2.tmp", folder / ".timings.csv.q9.tmp",
                 folder / ".results.csv.z.tmp"]
    for p in leftovers:
        p.write_text("half")
    exp.run_experiment(cfg, progress=False)
    assert not [p for p in leftovers if p.exists()]


def test_annotate_text_warns_on_chinese_with_the_english_pipeline(caplog):
    from probekit._extras import MissingExtraError
    from probekit.data.annotate import annotate_text, load_spacy
    from probekit.errors import ModelError

    try:
        load_spacy(None)
    except (ModelError, MissingExtraError):
        pytest.skip("no spaCy (the [annotate] extra) or no English pipeline installed")
    with caplog.at_level(logging.WARNING):
        annotate_text("这是一个中文句子。", source="zh.txt")
    assert "zh.txt" in caplog.text and "script" in caplog.text


def test_second_run_waits_for_the_lock_on_the_results_folder(tiny_bert_dir, ewt_dev, tmp_path, monkeypatch,
                                                              no_figures):
    import probekit.runner.experiment as exp
    from probekit.errors import ProbekitError

    cfg = small_cfg(tiny_bert_dir, ewt_dev, tmp_path, tasks=["aux_verb"])
    lock = Path(cfg.results_dir) / f".{cfg.name}.lock"
    lock.parent.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from filelock import FileLock; "
                               f"l = FileLock({str(lock)!r}); l.acquire(); print('held', flush=True); "
                               "time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        monkeypatch.setenv("PROBEKIT_LOCK_TIMEOUT", "1")
        with pytest.raises(ProbekitError, match=r"\.lock"):
            exp.run_experiment(cfg, progress=False)
    finally:
        holder.kill()
        holder.wait()
    res = exp.run_experiment(cfg, progress=False)  # the lock is free again
    assert (res.folder / "results.csv").is_file()


# ------------------------------------------------------------------------------- 6. --strict is strict

@pytest.fixture
def store(tiny_bert_dir, mini_sents, tmp_path):
    from probekit.activations.extract import extract
    from probekit.activations.models import load_model

    lm = load_model(str(tiny_bert_dir), device="cpu")
    st = extract(lm, mini_sents, store_root=tmp_path / "stores", shard_words=200, progress=False)
    return lm, st


def test_strict_refuses_a_shard_without_meta_and_no_manifest(store, mini_sents, tmp_path, caplog):
    from probekit.activations.extract import extract
    from probekit.errors import StoreError

    lm, st = store
    (st.path / "manifest.json").unlink()
    (st.path / "shard-00000" / "meta.json").unlink()
    with pytest.raises(StoreError, match="shard-00000"):
        extract(lm, mini_sents, store_root=tmp_path / "stores", shard_words=200, progress=False, strict=True)
    with caplog.at_level(logging.WARNING):
        extract(lm, mini_sents, store_root=tmp_path / "stores", shard_words=200, progress=False)
    assert "shard-00000" in caplog.text


def test_strict_refuses_a_foreign_manifest(store, mini_sents, tmp_path, caplog):
    from probekit.activations.extract import extract
    from probekit.errors import StoreError

    lm, st = store
    m = json.loads((st.path / "manifest.json").read_text())
    m["key"] = "0" * 20
    (st.path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(StoreError, match="manifest.json"):
        extract(lm, mini_sents, store_root=tmp_path / "stores", shard_words=200, progress=False, strict=True)
    with caplog.at_level(logging.WARNING):
        extract(lm, mini_sents, store_root=tmp_path / "stores", shard_words=200, progress=False)
    assert "manifest.json" in caplog.text


# ------------------------------------------------------------------------------- 7. disk full

def test_disk_full_names_the_path_and_the_bytes(tmp_path, monkeypatch):
    import probekit._io as io

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(io.os, "fsync", full)
    target = tmp_path / "out" / "results.csv"
    with pytest.raises(OSError) as e:
        io.atomic_write_bytes(target, b"x" * 12345)
    assert str(target) in str(e.value) and "12345" in str(e.value)
    assert not list(target.parent.glob("*")), "nothing half-written is left behind"


# ------------------------------------------------------------------------------- 8. predict --input, not UTF-8

def test_predict_input_not_utf8_names_file_and_line(tmp_path, capsys):
    from probekit._io import read_input_lines
    from probekit.errors import DataError

    p = tmp_path / "in.txt"
    p.write_bytes(b"A good line.\nAnother one.\nCaf\xe9 latin-1 here.\n")
    with pytest.raises(DataError, match=rf"{p}:3"):
        read_input_lines(p)
    p.write_bytes(b"One.\n\n  Two.  \n")
    assert read_input_lines(p) == ["One.", "Two."]


def test_cli_predict_input_not_utf8(tmp_path, capsys, monkeypatch):
    import probekit.bundle as bundle
    from probekit.cli import main

    monkeypatch.setattr(bundle, "load_probe_bundle", lambda path: object())
    p = tmp_path / "in.txt"
    p.write_bytes(b"ok\n\xff\xfe\n")
    assert main(["predict", str(tmp_path / "b.probe"), "--input", str(p)]) != 0
    err = capsys.readouterr().err
    assert f"{p}:2" in err.replace("\n", " ") and "disk space" not in err


# ------------------------------------------------------------------------------- 11. words with no subword of their own

def test_words_without_own_subword_are_logged_with_the_count(tiny_bert_dir, tmp_path, caplog):
    from probekit.activations.extract import extract
    from probekit.activations.models import load_model
    from probekit.data.conllu_io import Sentence

    lm = load_model(str(tiny_bert_dir), device="cpu")
    sents = [Sentence.from_words(["a", "\u200b", "cat", "\u00a0", "sat"], space_after=[True] * 5)]
    with caplog.at_level(logging.WARNING):
        st = extract(lm, sents, store_root=tmp_path / "stores", progress=False)
    n = st.manifest["stats"]["borrowed_words"]
    assert n >= 1
    assert f"{n} word" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # once per run: a reused store says it again
        extract(lm, sents, store_root=tmp_path / "stores", progress=False)
    assert f"{n} word" in caplog.text


def test_annotate_warns_on_mostly_foreign_script(caplog):
    from probekit.data.annotate import language_mismatch

    assert language_mismatch("这是一个中文句子。我们喜欢读书。", "en")
    assert language_mismatch("هذه جملة عربية طويلة جدا", "en")
    assert not language_mismatch("This is plain English, with a café and naïve words.", "en")
    assert not language_mismatch("这是一个中文句子。", "zh")


# ------------------------------------------------------------------------------- the one key builder

def test_key_builder_keeps_the_values_of_the_old_hand_assembled_keys():
    """Stores and baseline runs keep their keys through keys.content_key (no re-extraction, no re-training)."""
    import hashlib

    from probekit.activations.store import STORE_FORMAT, store_key
    from probekit.baselines.config import BaselineConfig

    spec = {"model": {"name": "m", "weights_hash": "abc"}, "data": {"split": "dev", "n_sentences": 3},
            "dtype": "float16"}
    old = hashlib.sha256(json.dumps({"format": STORE_FORMAT, **spec}, sort_keys=True, default=str).encode())
    assert store_key(spec) == old.hexdigest()[:20]
    from probekit.baselines.config import _METHOD_FIELD_PREFIXES

    cfg = BaselineConfig()
    d = cfg.resolved("lora").to_dict()
    d.pop("methods")
    d.pop("per_method")
    d = {k: v for k, v in d.items()
         if next((m for p, m in _METHOD_FIELD_PREFIXES.items() if k.startswith(p)), "lora") == "lora"}
    assert cfg.fingerprint("lora") == hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]
