"""Never lose work: extraction and experiments killed with SIGKILL resume where they stopped (issue 7).

The killed runs are real child processes, ended with ``SIGKILL`` (no cleanup handler can run).
They are forked from the test process, which has already imported torch and transformers, so a
killed run starts in milliseconds instead of the ~15 s a fresh ``python -c`` needs to import
them on a loaded CI machine. Forking is safe here: the parent and every child use one torch
thread (no OpenMP pool is entered after the fork). Kill points are exact where it matters: the
child hangs (and is killed) right after the N-th manifest write, right after the N-th shard
folder rename (before the manifest names it), or in the middle of writing a shard (arrays on
disk, ``meta.json`` not yet); two more kills land at random times.

After every kill the run is resumed in this process and checked: only the missing shards are
computed (``store.computed_shards``), no temporary files are left, and every array is
byte-identical to an uninterrupted extraction into another root.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import time
from pathlib import Path

import pytest

from tiny import small_conllu

SHARD_WORDS = 16


# ------------------------------------------------------------------------------------------- child processes

def _hang(events: Path, tag: str) -> None:
    (events / tag).write_text(str(os.getpid()))
    time.sleep(600)  # the parent kills us here


def _child_extract(model_dir: str, sentences, root: str, events: str, hook: str, n: int) -> None:
    """Run ``extract`` in a killable process; ``hook`` picks where it hangs to be killed.

    hook: ``after_manifest`` (after the n-th manifest write = n shards committed and recorded),
    ``after_rename`` (after the n-th shard folder rename, before the manifest names it),
    ``mid_write`` (while writing the n-th shard: arrays written in the temporary folder, no
    meta.json yet), ``mid_manifest`` (the n-th manifest written to its temporary file, not yet
    renamed), ``slow`` (sleep n ms before each shard commit), ``none``.
    """
    import torch

    import probekit.activations.store as store_mod
    import probekit.activations.writer as ex_mod  # the store writer: manifest writes and shard commits
    from probekit.activations.extract import extract
    from probekit.activations.models import load_model

    torch.set_num_threads(1)  # as in the parent: same kernels, same bytes (and no oversubscription)
    ev = Path(events)
    count = [0]
    if hook == "after_manifest":
        orig_write = ex_mod.atomic_write_bytes

        def manifest_write(path, data):
            orig_write(path, data)
            if Path(path).name == "manifest.json":
                count[0] += 1
                if count[0] == n:
                    _hang(ev, "hung")
        ex_mod.atomic_write_bytes = manifest_write
    elif hook == "after_rename":
        orig_shard = ex_mod.write_shard

        def shard_then_hang(*a, **kw):
            meta = orig_shard(*a, **kw)
            count[0] += 1
            if count[0] == n:
                _hang(ev, "hung")
            return meta
        ex_mod.write_shard = shard_then_hang
    elif hook == "mid_write":
        orig_meta = store_mod.atomic_write_bytes

        def meta_write(path, data):
            if Path(path).name == "meta.json":
                count[0] += 1
                if count[0] == n:
                    _hang(ev, "hung")
            orig_meta(path, data)
        store_mod.atomic_write_bytes = meta_write
    elif hook == "mid_manifest":
        orig_replace = os.replace

        def replace(src, dst, *a, **kw):
            if Path(dst).name == "manifest.json":
                count[0] += 1
                if count[0] == n:
                    _hang(ev, "hung")
            return orig_replace(src, dst, *a, **kw)
        os.replace = replace  # this process only
    elif hook == "slow":
        orig_slow = ex_mod.write_shard

        def slow_shard(*a, **kw):
            time.sleep(n / 1000)
            return orig_slow(*a, **kw)
        ex_mod.write_shard = slow_shard
    lm = load_model(model_dir, device="cpu")
    (ev / "started").write_text(str(os.getpid()))
    st = extract(lm, sentences, store_root=root, shard_words=SHARD_WORDS, progress=False)
    (ev / "done").write_text(json.dumps({"computed": st.computed_shards}))


def _child_experiment(cfg: dict, events: str) -> None:
    """Run an experiment in a killable process; hang (to be killed) once the first result unit is saved."""
    import torch

    import probekit.runner.experiment as exp
    from probekit.config import ExperimentConfig

    torch.set_num_threads(1)
    ev = Path(events)
    orig = exp.save_unit

    def save_then_hang(path, rows, **kw):
        orig(path, rows, **kw)
        _hang(ev, "hung")
    exp.save_unit = save_then_hang
    exp.run_experiment(ExperimentConfig(**cfg), progress=False)
    (ev / "done").write_text("finished")


# ------------------------------------------------------------------------------------------- helpers

def npy_digests(store_dir: Path) -> dict[str, str]:
    return {str(p.relative_to(store_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(store_dir.glob("shard-*/*.npy"))}


def committed(store_dir: Path) -> list[str]:
    return sorted(p.name for p in store_dir.glob("shard-*") if p.is_dir())


def manifest_shards(store_dir: Path) -> list[str]:
    return [s["name"] for s in json.loads((store_dir / "manifest.json").read_text())["shards"]]


def unit_rows(path: Path) -> list[dict]:
    """A result unit's rows without their wall times (which differ from run to run)."""
    from probekit.results.table import load_unit

    rows = load_unit(path)
    assert rows, f"{path} is not a finished unit"
    return [{k: v for k, v in r.items() if k != "train_seconds"} for r in rows]


def start(ctx, target, *args):
    p = ctx.Process(target=target, args=args, daemon=True)
    p.start()
    return p


def wait_for(p, path: Path, timeout: float = 120.0) -> None:
    """Wait until ``path`` exists (the child reached a kill point); fail if the child died first."""
    t0 = time.monotonic()
    while not path.exists():
        if not p.is_alive():
            pytest.fail(f"child exited (code {p.exitcode}) before writing {path.name}")
        if time.monotonic() - t0 > timeout:
            p.kill()
            pytest.fail(f"child did not reach {path.name} within {timeout:.0f}s")
        time.sleep(0.01)


def kill(p) -> None:
    p.kill()  # SIGKILL
    p.join(30)
    assert p.exitcode == -9, p.exitcode


def fresh_events(tmp_path: Path, name: str) -> Path:
    d = tmp_path / "events" / name
    d.mkdir(parents=True)
    return d


# ------------------------------------------------------------------------------------------- fixtures

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ctx(one_thread):
    """Where killable children come from: ``fork`` (see the module docstring); ``spawn`` without it."""
    import multiprocessing as mp

    return mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")


@pytest.fixture(scope="module")
def bert(ctx, one_thread, tiny_bert_dir):
    from probekit.activations.models import load_model

    return load_model(str(tiny_bert_dir), device="cpu")


@pytest.fixture(scope="module")
def reference(bert, mini_sents, tmp_path_factory):
    """An uninterrupted extraction: (store folder, npy digests, number of shards)."""
    from probekit.activations.extract import extract

    st = extract(bert, mini_sents, store_root=tmp_path_factory.mktemp("ref"), shard_words=SHARD_WORDS,
                 progress=False)
    assert st.manifest["n_shards"] >= 6, "the test needs several shards"
    return st.path, npy_digests(st.path), st.manifest["n_shards"]


def resume_and_check(bert, sentences, root: Path, reference, *, tolerate_manifest_tmp: bool = False) -> int:
    """Resume in this process; check what was computed, leftovers and byte-identity. Returns computed shards.

    ``tolerate_manifest_tmp``: ignore a leftover ``.manifest.json.*.tmp`` (a kill during a manifest
    write); that case has its own test, which fails until extract.py cleans such files.
    """
    from probekit.activations.extract import extract

    ref_dir, ref_digests, n = reference
    (store_dir,) = [p for p in root.iterdir() if p.is_dir()]
    assert store_dir.name == ref_dir.name, "same inputs, same store key"
    on_disk = committed(store_dir)
    st = extract(bert, sentences, store_root=root, shard_words=SHARD_WORDS, progress=False)
    assert st.computed_shards == n - len(on_disk), (st.computed_shards, on_disk)
    leftovers = sorted(p.name for p in store_dir.iterdir()
                       if p.name not in ("manifest.json", ".lock") and not p.name.startswith("shard-")
                       and not (tolerate_manifest_tmp and p.match(".manifest.json.*.tmp")))
    assert leftovers == [], f"temporary files left behind: {leftovers}"
    assert npy_digests(store_dir) == ref_digests, "resumed store differs from an uninterrupted run"
    assert st.manifest["shards"] == json.loads((ref_dir / "manifest.json").read_text())["shards"]
    st.verify_all()
    return st.computed_shards


# ------------------------------------------------------------------------------------------- extraction

def test_extraction_killed_at_exact_points_resumes_byte_identical(ctx, bert, mini_sents, reference, tmp_path):
    root = tmp_path / "store"
    args = (str(bert.path), mini_sents, str(root))
    n = reference[2]

    # 1. killed after the first shard is committed and recorded in the manifest
    ev = fresh_events(tmp_path, "a")
    p = start(ctx, _child_extract, *args, str(ev), "after_manifest", 1)
    wait_for(p, ev / "hung")
    kill(p)
    (store_dir,) = list(root.iterdir())
    assert committed(store_dir) == manifest_shards(store_dir) == ["shard-00000"]

    # 2. resumed, then killed after its 2nd shard folder is renamed into place but before the manifest names it
    ev = fresh_events(tmp_path, "b")
    p = start(ctx, _child_extract, *args, str(ev), "after_rename", 2)
    wait_for(p, ev / "hung")
    kill(p)
    assert committed(store_dir) == [f"shard-{i:05d}" for i in range(3)]
    assert manifest_shards(store_dir) == [f"shard-{i:05d}" for i in range(2)]

    # 3. resumed (picks up shard 2 from its folder), killed in the middle of writing its 2nd new shard
    ev = fresh_events(tmp_path, "c")
    p = start(ctx, _child_extract, *args, str(ev), "mid_write", 2)
    wait_for(p, ev / "hung")
    kill(p)
    assert committed(store_dir) == [f"shard-{i:05d}" for i in range(4)]
    tmp = list(store_dir.glob(".tmp-shard-*"))
    assert tmp and list(tmp[0].glob("*.npy")) and not (tmp[0] / "meta.json").exists(), "a half-written shard"

    # 4. resumed here: computes only the missing shards, cleans up, byte-identical
    assert resume_and_check(bert, mini_sents, root, reference) == n - 4


@pytest.mark.parametrize("seed", [1, 2])
def test_extraction_killed_at_random_time_resumes_byte_identical(seed, ctx, bert, mini_sents, reference, tmp_path):
    root = tmp_path / "store"
    ev = fresh_events(tmp_path, "r")
    p = start(ctx, _child_extract, str(bert.path), mini_sents, str(root), str(ev), "slow", 60)
    wait_for(p, ev / "started")
    # the child sleeps 60 ms before each of its n shard commits, so it cannot finish before n x 60 ms: a kill
    # at a random fraction of that always interrupts it (a slow machine only makes the child slower)
    delay = random.Random(seed).uniform(0.05, 0.95) * reference[2] * 0.060
    time.sleep(delay)
    assert not (ev / "done").exists(), f"the child finished within {delay:.2f}s"
    kill(p)
    resume_and_check(bert, mini_sents, root, reference, tolerate_manifest_tmp=True)


def test_extraction_killed_during_manifest_write(ctx, bert, mini_sents, reference, tmp_path):
    root = tmp_path / "store"
    ev = fresh_events(tmp_path, "m")
    p = start(ctx, _child_extract, str(bert.path), mini_sents, str(root), str(ev), "mid_manifest", 3)
    wait_for(p, ev / "hung")
    kill(p)
    (store_dir,) = list(root.iterdir())
    assert list(store_dir.glob(".manifest.json.*.tmp")), "the kill left a half-done manifest write"
    assert manifest_shards(store_dir) == ["shard-00000", "shard-00001"]
    assert resume_and_check(bert, mini_sents, root, reference) == reference[2] - 3


def test_two_processes_extracting_the_same_store(ctx, bert, mini_sents, reference, tmp_path):
    """Started together on one store: the lock serialises them, the work is done once, the store is valid."""
    root = tmp_path / "store"
    evs = [fresh_events(tmp_path, f"p{i}") for i in range(2)]
    ps = [start(ctx, _child_extract, str(bert.path), mini_sents, str(root), str(ev), "none", 0) for ev in evs]
    for p in ps:
        p.join(120)
        assert p.exitcode == 0, p.exitcode
    computed = sorted(json.loads((ev / "done").read_text())["computed"] for ev in evs)
    assert computed == [0, reference[2]], "one process computes every shard, the other reuses them"
    (store_dir,) = list(root.iterdir())
    assert npy_digests(store_dir) == reference[1]
    from probekit.activations.store import ActivationStore

    ActivationStore(store_dir).verify_all()


# ------------------------------------------------------------------------------------------- result units

@pytest.fixture
def no_figures(monkeypatch):
    """Figures are not under test here and cost seconds per run (matplotlib layout)."""
    import probekit.report.figures as figures

    monkeypatch.setattr(figures, "experiment_figures", lambda *a, **k: [])


def test_killed_experiment_resumes_without_recomputing_finished_units(ctx, tiny_bert_dir, ewt_dev, tmp_path,
                                                                      monkeypatch, no_figures):
    import probekit.runner.experiment as exp
    from probekit.config import ExperimentConfig

    cfg = ExperimentConfig(name="resume", models=[str(tiny_bert_dir)], dataset="conllu",
                           files=small_conllu(ewt_dev, tmp_path / "data"), tasks=["aux_verb", "upos"], Cs=[1.0],
                           control_tasks=False, mdl=False, random_baseline=False, figures=[], device="cpu",
                           store_dir=str(tmp_path / "stores"), results_dir=str(tmp_path / "results"))
    ev = fresh_events(tmp_path, "exp")
    p = start(ctx, _child_experiment, cfg.to_dict(), str(ev))
    wait_for(p, ev / "hung")
    kill(p)
    runs = tmp_path / "results" / "resume" / "runs"
    (first,) = list(runs.glob("*.json"))
    first_mtime = first.stat().st_mtime_ns
    first_rows = unit_rows(first)
    assert not (tmp_path / "results" / "resume" / "results.csv").exists()

    computed: list[tuple[str, str]] = []
    orig = exp.probe_task

    def recording(**kw):
        computed.extend((u.task, u.key) for u in kw["units"])
        return orig(**kw)
    monkeypatch.setattr(exp, "probe_task", recording)

    res = exp.run_experiment(cfg, progress=False)
    assert [t for t, _ in computed] == ["upos"], f"finished unit recomputed: {computed}"
    assert first.stat().st_mtime_ns == first_mtime, "the finished unit's file was rewritten"
    assert res.forward_passes == 0, "the stores were complete: no forward pass on resume"
    assert set(res.table["task"]) == {"aux_verb", "upos"}
    csv = (res.folder / "results.csv").read_bytes()

    # a damaged unit file is recomputed (and only that one), giving the same table to the byte
    (upos_key,) = [k for _, k in computed]
    damaged = runs / f"{upos_key}.json"
    damaged.write_bytes(damaged.read_bytes()[:100])
    computed.clear()
    res2 = exp.run_experiment(cfg, progress=False)
    assert computed == [("upos", upos_key)]
    assert (res2.folder / "results.csv").read_bytes() == csv

    # the unit computed in the killed process equals a recomputation here (same rows, same bytes of results.csv)
    first.write_text("{not json")
    computed.clear()
    exp.run_experiment(cfg, progress=False)
    assert [t for t, _ in computed] == ["aux_verb"]
    assert (res2.folder / "results.csv").read_bytes() == csv
    assert unit_rows(first) == first_rows


@pytest.mark.parametrize("damage", ["empty_list", "changed_value"])
def test_unit_file_that_is_valid_json_but_wrong_is_recomputed(damage, tmp_path):
    from probekit.results.table import COLUMNS, load_unit, row, save_unit

    path = tmp_path / "u.json"
    rows = [row(experiment="e", model="m", task="t", layer=0, metric="accuracy", value=0.5, seed=0)]
    save_unit(path, rows)
    assert load_unit(path) == [{c: rows[0][c] for c in COLUMNS}]
    text = path.read_text()
    if damage == "empty_list":
        path.write_text("[]")
    else:
        path.write_text(text.replace("0.5", "0.9"))
    assert load_unit(path) is None


@pytest.mark.parametrize("garbage", [b"\xff\xfe\x00", b"{}"])
def test_damaged_run_log_does_not_fail_a_finished_run(garbage, tmp_path):
    from probekit.runner.experiment import _append_run_log

    (tmp_path / "run_log.json").write_bytes(garbage)
    _append_run_log(tmp_path, {"seconds": 1.0})
    assert json.loads((tmp_path / "run_log.json").read_text())[-1] == {"seconds": 1.0}


def test_damaged_baseline_run_file_is_redone(tmp_path):
    from probekit.baselines.records import read_run

    (tmp_path / "run.json").write_bytes(b"\xff\xfe garbage")
    assert read_run(tmp_path / "run.json") is None


def test_unit_keys_follow_content_not_location(tiny_bert_dir, ewt_dev, tmp_path):
    """The same treebank found through another directory keeps its finished units; changed content does not."""
    from probekit.activations.models import fingerprint
    from probekit.config import ExperimentConfig
    from probekit.runner.data import load_data
    from probekit.runner.units import plan_units

    def keys(folder, files=None, **over):
        cfg = ExperimentConfig(name="k", models=[str(tiny_bert_dir)], dataset="conllu", tasks=["aux_verb"],
                               files=files or small_conllu(ewt_dev, folder), **over)
        _, data_fp = load_data(cfg)
        return [u.key for u in plan_units(cfg, str(tiny_bert_dir), fingerprint(str(tiny_bert_dir)), data_fp)]

    a = keys(tmp_path / "a")
    assert keys(tmp_path / "b") == a
    # the linear control heads of all seeds are fitted together: seed 0's unit depends on the seed list
    assert keys(tmp_path / "a", seeds=[0, 1])[0] != a[0]
    assert keys(tmp_path / "a", seeds=[0, 1], control_tasks=False)[0] == keys(tmp_path / "a", control_tasks=False)[0]
    assert keys(tmp_path / "c", Cs=[0.5]) != a
    files = small_conllu(ewt_dev, tmp_path / "d")
    files["train"] = files["dev"]
    assert keys(None, files=files) != a
