"""Never silently wrong: bad input gives a clear probekit error, never a traceback (issue 7).

Every case is checked at the API (a :class:`~probekit.errors.ProbekitError` subclass whose message
names the bad file, line or value and what to do) and, where a user meets it on the command line,
through ``python -m probekit.cli`` in a real process: exit status 2, one paragraph on stderr,
no traceback. Command-line cases that would load a model run ``probekit.cli.main`` in this
process instead (same code path, no 15 s torch import per case).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from probekit.errors import ConfigError, DataError, ModelError, ProbekitError, StoreError, TaskError

REPO = Path(__file__).resolve().parents[1]
GOOD_LINE = "1\tDogs\tdog\tNOUN\tNNS\tNumber=Plur\t2\tnsubj\t_\t_"


# ------------------------------------------------------------------------------------------- helpers

def unwrap(text: str) -> str:
    """Undo textwrap.fill: join lines broken at a hyphen or at a space."""
    return text.replace("-\n", "-").replace("\n", " ")


def check_cli_error(rc: int, stderr: str, *needles: str) -> str:
    """Exit status 2, one 'probekit: error:' paragraph naming every needle, no traceback."""
    assert rc == 1, f"exit status {rc}; stderr:\n{stderr}"
    assert "Traceback" not in stderr, stderr
    assert "probekit: error:" in stderr, stderr
    msg = stderr[stderr.index("probekit: error:"):].strip()
    assert "\n\n" not in msg, "the message must be one paragraph"
    flat = unwrap(msg)
    for n in needles:
        assert n in flat, f"{n!r} not in: {flat}"
    return flat


def run_cli(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m probekit.cli ARGS`` offline: own cache, no data dir, downloads fail at once."""
    e = {k: v for k, v in os.environ.items() if k not in ("PROBEKIT_DATA_DIR", "PROBEKIT_TASKS_PATH")}
    e.update(PROBEKIT_CACHE_DIR=str(cwd / "cache"), PROBEKIT_UD_URL_TEMPLATE="http://127.0.0.1:9/{repo}/{tag}/{file}",
             HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONPATH=str(REPO))
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "probekit.cli", "-q", *args], cwd=cwd, env=e, capture_output=True,
                          text=True, timeout=120)


def write_conllu_text(path: Path, blocks: list[str]) -> Path:
    path.write_text("\n\n".join(blocks) + "\n\n", encoding="utf-8")
    return path


def sentence_block(words: list[tuple[str, str]], sent_id: str = "s1") -> str:
    """A CoNLL-U block from (form, upos) pairs (a flat tree under the first word)."""
    lines = [f"# sent_id = {sent_id}", "# text = " + " ".join(w for w, _ in words)]
    for i, (w, u) in enumerate(words, 1):
        lines.append(f"{i}\t{w}\t{w.lower()}\t{u}\t_\t_\t{0 if i == 1 else 1}\t{'root' if i == 1 else 'dep'}\t_\t_")
    return "\n".join(lines)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def small_files(ewt_dev, tmp_path) -> dict[str, str]:
    """Small train/dev/test CoNLL-U files cut from EWT dev (30 / 12 / 12 sentences)."""
    from probekit.data.conllu_io import write_conllu

    cuts = {"train": ewt_dev[:30], "dev": ewt_dev[30:42], "test": ewt_dev[42:54]}
    for role, sents in cuts.items():
        write_conllu(sents, tmp_path / f"{role}.conllu")
    return {role: str(tmp_path / f"{role}.conllu") for role in cuts}


def tiny_config(model_dir, files, tmp_path, **kw):
    from probekit.config import ExperimentConfig

    base = dict(name="err", models=[str(model_dir)], dataset="conllu", files=files, tasks=["aux_verb"], Cs=[1.0],
                control_tasks=False, mdl=False, random_baseline=False, figures=[], device="cpu",
                store_dir=str(tmp_path / "stores"), results_dir=str(tmp_path / "results"))
    base.update(kw)
    return ExperimentConfig(**base)


# ------------------------------------------------------------------------------------------- data files

def test_malformed_conllu_names_file_and_line(tmp_path):
    from probekit.data.conllu_io import read_conllu

    bad = write_conllu_text(tmp_path / "train.conllu", [
        sentence_block([("Dogs", "NOUN"), ("bark", "VERB")]),
        "# sent_id = s2\n# text = Cats sleep\n1\tCats\tcat\tNOUN\t_\t_\t2\tnsubj\t_\n"  # 9 columns
        "2\tsleep\tsleep\tVERB\t_\t_\t0\troot\t_\t_"])
    line = bad.read_text().splitlines().index("1\tCats\tcat\tNOUN\t_\t_\t2\tnsubj\t_") + 1
    assert line == 8
    with pytest.raises(DataError, match=rf"train\.conllu:{line}: expected 10 tab-separated"):
        read_conllu(bad)
    for role in ("dev", "test"):
        write_conllu_text(tmp_path / f"{role}.conllu", [sentence_block([("Dogs", "NOUN"), ("bark", "VERB")])])
    (tmp_path / "c.yaml").write_text("name: e\nmodels: [minilm]\ndataset: conllu\n"
                                     "files: {train: train.conllu, dev: dev.conllu, test: test.conllu}\n")
    p = run_cli("run", "c.yaml", cwd=tmp_path)
    check_cli_error(p.returncode, p.stderr, f"train.conllu:{line}", "10 tab-separated")


def test_bad_head_and_invalid_utf8_data_name_the_line(tmp_path):
    from probekit.data.conllu_io import read_conllu

    p = tmp_path / "x.conllu"
    write_conllu_text(p, [sentence_block([("Dogs", "NOUN"), ("bark", "VERB")]).replace("\t1\tdep", "\tX\tdep")])
    with pytest.raises(DataError, match=r"x\.conllu:4: .*'head'"):
        read_conllu(p)
    p.write_bytes(b"# text = caf\xe9\n" + GOOD_LINE.encode() + b"\n\n")
    with pytest.raises(DataError, match=r"x\.conllu:1: not valid UTF-8"):
        read_conllu(p)


def test_missing_data_says_where_it_looked(tmp_path, monkeypatch):
    from probekit.data.datasets import locate

    monkeypatch.delenv("PROBEKIT_DATA_DIR", raising=False)
    monkeypatch.setenv("PROBEKIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PROBEKIT_UD_URL_TEMPLATE", "http://127.0.0.1:9/{repo}/{tag}/{file}")
    with pytest.raises(DataError) as ei:
        locate("ud_ewt", "dev", data_dir=tmp_path / "nodata")
    msg = str(ei.value)
    assert str(tmp_path / "nodata" / "ud" / "UD_English-EWT" / "en_ewt-ud-dev.conllu") in msg
    assert str(tmp_path / "cache" / "data") in msg and "PROBEKIT_DATA_DIR" in msg
    (tmp_path / "c.yaml").write_text("name: e\nmodels: [minilm]\ndata_dir: nodata\n")
    p = run_cli("run", "c.yaml", cwd=tmp_path)
    check_cli_error(p.returncode, p.stderr, "nodata/ud/UD_English-EWT/en_ewt-ud-train.conllu", "PROBEKIT_DATA_DIR")


def test_empty_split(tmp_path, ewt_dev):
    from probekit.data.conllu_io import write_conllu
    from probekit.runner.data import load_data

    write_conllu(ewt_dev[:3], tmp_path / "dev.conllu")
    write_conllu(ewt_dev[:3], tmp_path / "test.conllu")
    (tmp_path / "train.conllu").write_text("# just a comment\n\n")
    files = {r: f"{r}.conllu" for r in ("train", "dev", "test")}
    from probekit.config import ExperimentConfig

    with pytest.raises(DataError, match="train split is empty"):
        load_data(ExperimentConfig(dataset="conllu", files={r: str(tmp_path / f) for r, f in files.items()}))
    write_conllu(ewt_dev[:3], tmp_path / "train.conllu")
    with pytest.raises(DataError, match="dev split is empty"):
        load_data(ExperimentConfig(dataset="conllu", files={r: str(tmp_path / f) for r, f in files.items()},
                                   limit={"train": 2, "dev": 0}))
    (tmp_path / "empty.conllu").write_text("")
    (tmp_path / "c.yaml").write_text("name: e\nmodels: [minilm]\ndataset: conllu\n"
                                     "files: {train: empty.conllu, dev: dev.conllu, test: test.conllu}\n")
    p = run_cli("run", "c.yaml", cwd=tmp_path)
    check_cli_error(p.returncode, p.stderr, "empty.conllu", "empty")


def test_extract_of_nothing_is_an_error(tiny_bert_dir, tmp_path):
    from probekit.activations.extract import extract
    from probekit.activations.models import load_model

    with pytest.raises(StoreError, match="empty"):
        extract(load_model(str(tiny_bert_dir), device="cpu"), [], store_root=tmp_path, progress=False)


# ------------------------------------------------------------------------------------------- names

@pytest.mark.parametrize("name, suggestion", [("minilmm", "minilm"), ("smollm2", "smollm2-135m"),
                                              ("minilm@randm", "random")])
def test_unknown_model_or_alias_did_you_mean(name, suggestion):
    from probekit.activations.models import resolve

    with pytest.raises(ModelError, match=f"Did you mean '{suggestion}'"):
        resolve(name)


def test_typo_of_hyphenated_alias_is_not_sent_to_the_hub():
    from probekit.activations.models import resolve

    with pytest.raises(ModelError, match="Did you mean 'smollm2-135m'"):
        resolve("smollm2-135")


def test_unknown_task_pooling_config_key_did_you_mean(tmp_path):
    from probekit.activations.align import check_pooling
    from probekit.config import ExperimentConfig
    from probekit.tasks import get_task

    with pytest.raises(TaskError, match="Did you mean 'upos'"):
        get_task("upoz")
    with pytest.raises(ConfigError, match="Did you mean 'first'"):
        ExperimentConfig(word_pooling="frist")
    with pytest.raises(ConfigError, match="Did you mean 'mean'"):
        ExperimentConfig(sentence_poolings=["mena"])
    with pytest.raises(ConfigError, match="Did you mean 'last'"):
        check_pooling("lsat", sentence=True)
    with pytest.raises(ConfigError, match="Did you mean 'models'"):
        ExperimentConfig.from_dict({"modles": ["minilm"]})
    (tmp_path / "k.yaml").write_text("name: e\nmodles: [minilm]\n")
    (tmp_path / "t.yaml").write_text("name: e\nmodels: [minilm]\ntasks: [upoz]\n")
    p = run_cli("run", "k.yaml", cwd=tmp_path)
    check_cli_error(p.returncode, p.stderr, "'modles'", "Did you mean 'models'", "k.yaml")
    p = run_cli("run", "t.yaml", cwd=tmp_path)
    check_cli_error(p.returncode, p.stderr, "'upoz'", "Did you mean 'upos'")


CONFIG_TYPE_CASES = [
    # (field, bad value, the value it may be read as instead of an error (None = must be an error), fails today)
    ("tasks", "upos", ["upos"], True),
    ("probes", "linear", ["linear"], True),
    ("seeds", 0, [0], False),
    ("Cs", 1.0, [1.0], True),
    ("layers", 5, [5], True),
    ("layers", ["a"], None, True),
    ("limit", 5, None, True),
    ("files", "x.conllu", None, True),
    ("batch_tokens", True, None, True),
    ("control_tasks", "yes", None, True),
]


@pytest.mark.parametrize("field, value, read_as", [
    (f, v, r) for f, v, r, bad in CONFIG_TYPE_CASES])
def test_config_value_of_wrong_type(field, value, read_as):
    """A wrong type is a ConfigError naming the key, or an obvious single value read as a one-item list."""
    from probekit.config import ExperimentConfig

    try:
        cfg = ExperimentConfig(**{field: value})
    except ConfigError as e:
        assert f"'{field}'" in str(e), str(e)
        return
    assert read_as is not None and getattr(cfg, field) == read_as


def test_config_override_on_the_cli_dry_run(tmp_path):
    """Positive control for the next test: a well-typed --set override resolves without error."""
    (tmp_path / "c.yaml").write_text("name: e\nmodels: [minilm]\n")
    from probekit.cli import main

    try:
        rc = main(["-q", "run", str(tmp_path / "c.yaml"), "--set", "seeds=[0]", "--dry-run"])
    except Exception as e:  # noqa: BLE001
        pytest.fail(f"raw {type(e).__name__}: {e}")
    assert rc == 0


def test_config_override_limit_scalar_is_clean_error(tmp_path, capsys):
    from probekit.cli import main

    (tmp_path / "c.yaml").write_text("name: e\nmodels: [minilm]\n")
    rc = main(["-q", "run", str(tmp_path / "c.yaml"), "--set", "limit=5", "--dry-run"])
    check_cli_error(rc, capsys.readouterr().err, "'limit'")


def test_config_override_null_is_applied_and_unknown_keys_say_set(tmp_path, capsys):
    from probekit.cli import main
    from probekit.config import resolve_config

    (tmp_path / "c.yaml").write_text("name: e\nlayers: [0, 3]\nmax_train_items: 500\n")
    cfg = resolve_config(tmp_path / "c.yaml", {"layers": None, "max_train_items": None})
    assert cfg.layers is None and cfg.max_train_items is None
    rc = main(["-q", "run", str(tmp_path / "c.yaml"), "--set", "lyers=null", "--dry-run"])
    check_cli_error(rc, capsys.readouterr().err, "'lyers'", "layers", "(in --set)")


@pytest.mark.parametrize("yaml_text, needles", [
    ("layers: [-1]\n", ("'layers'", "-1", "c.yaml")),
    ("layers: []\n", ("'layers'", "non-empty")),
    ("seeds: [0, 0]\n", ("'seeds'", "more than once")),
    ("tasks: [upos, upos]\n", ("'tasks'", "more than once")),
    ("probes: [linear, mlp1]\nmlp: {hidden: 64}\n", ("MLP setting", "'hidden'", "hidden_size", "'mlp'")),
    ("tasks: [uppos]\n", ("'tasks'", "'uppos'", "upos", "c.yaml")),
    ("probes: [lineer]\n", ("'lineer'", "linear", "c.yaml")),
])
def test_config_values_checked_before_any_work(tmp_path, yaml_text, needles):
    """Caught when the config is read (so --dry-run catches them), naming the key and the file."""
    from probekit.config import ExperimentConfig

    (tmp_path / "c.yaml").write_text("name: e\n" + yaml_text)
    with pytest.raises(ConfigError) as info:
        ExperimentConfig.from_yaml(tmp_path / "c.yaml")
    for n in needles:
        assert n in str(info.value), (n, str(info.value))


def test_mlp_settings_are_the_probe_keywords():
    import inspect

    from probekit.config import MLP_SETTINGS
    from probekit.probing.mlp import MLPProbe

    kw = set(inspect.signature(MLPProbe.__init__).parameters) - {"self", "hidden_layers", "seed", "device"}
    assert set(MLP_SETTINGS) == kw


def test_invalid_utf8_config(tmp_path):
    from probekit.config import ExperimentConfig

    (tmp_path / "c.yaml").write_bytes(b"name: caf\xe9\nmodels: [minilm]\n")
    with pytest.raises(ConfigError, match="not valid UTF-8"):
        ExperimentConfig.from_yaml(tmp_path / "c.yaml")
    p = run_cli("run", "c.yaml", cwd=tmp_path)
    check_cli_error(p.returncode, p.stderr, "c.yaml", "not valid UTF-8")


def test_invalid_utf8_task_yaml(tmp_path):
    d = tmp_path / "mytasks"
    d.mkdir()
    (d / "mine.yaml").write_bytes(b"name: caf\xe9\nlevel: word\nlabels: [a, b]\nlabel_fn: upos\n")
    p = run_cli("tasks", cwd=tmp_path, env={"PROBEKIT_TASKS_PATH": str(d)})
    check_cli_error(p.returncode, p.stderr, "mine.yaml", "UTF-8")


def test_annotate_empty_text(tmp_path):
    from probekit.data.annotate import annotate_text

    with pytest.raises(DataError, match="no sentences"):
        annotate_text("  \n\n \t\n")
    (tmp_path / "empty.txt").write_text("\n   \n")
    p = run_cli("annotate", "empty.txt", cwd=tmp_path)
    check_cli_error(p.returncode, p.stderr, "empty.txt", "no sentences")


def test_cli_error_keeps_paths_whole(tmp_path, capsys):
    from probekit.cli import main

    path = tmp_path / ("long-hyphenated-folder-name-" * 4) / "my-experiment-config-file.yaml"
    assert main(["run", str(path)]) == 1
    err = capsys.readouterr().err
    assert str(path) in err.replace("\n", " "), err


def test_cli_environment_error_is_one_paragraph(tmp_path):
    (tmp_path / "blocker").write_text("a file, not a folder")
    (tmp_path / "c.yaml").write_text("name: e\nmodels: [minilm]\ntasks: [upos]\n")
    p = run_cli("run", "c.yaml", "--results-dir", "blocker", cwd=tmp_path)
    check_cli_error(p.returncode, p.stderr, "blocker")


# ------------------------------------------------------------------------------------------- models and probing

def test_slow_tokenizer_is_explained(tiny_bert_dir, mini_sents, tmp_path):
    import dataclasses

    from transformers import BertTokenizer

    from probekit.activations.align import align_batch, check_fast_tokenizer
    from probekit.activations.extract import extract
    from probekit.activations.models import load_model

    slow = BertTokenizer.from_pretrained(str(tiny_bert_dir))
    if slow.is_fast:
        pytest.skip("transformers 5: BertTokenizer is backed by `tokenizers`; there is no slow one to refuse")
    with pytest.raises(ModelError, match="slow.*use_fast=True"):
        check_fast_tokenizer(slow)
    with pytest.raises(ModelError, match="slow"):
        align_batch(slow, mini_sents[:2])
    lm = dataclasses.replace(load_model(str(tiny_bert_dir), device="cpu"), tokenizer=slow)
    with pytest.raises(ModelError, match="slow"):
        extract(lm, mini_sents[:3], store_root=tmp_path, progress=False)


def test_out_of_memory_during_extraction_suggests_smaller_batch(tiny_bert_dir, mini_sents, data_dir, tmp_path,
                                                                monkeypatch, capsys):
    import transformers

    from probekit.activations.extract import extract
    from probekit.activations.models import load_model
    from probekit.cli import main

    def oom(self, *a, **kw):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.11 GiB total capacity)")
    monkeypatch.setattr(transformers.BertModel, "forward", oom)
    lm = load_model(str(tiny_bert_dir), device="cpu")
    with pytest.raises(ModelError, match="Out of memory.*batch.tokens") as ei:
        extract(lm, mini_sents[:5], store_root=tmp_path, progress=False, batch_tokens=2048)
    assert "2048" in str(ei.value), "the message gives the budget in use"
    rc = main(["-q", "extract", str(tiny_bert_dir), "--data-dir", str(data_dir), "--limit", "3",
               "--store-dir", str(tmp_path / "s2"), "--device", "cpu"])
    check_cli_error(rc, capsys.readouterr().err, "Out of memory", "--batch-tokens")
    # anything else the model raises is not disguised as an out-of-memory error
    monkeypatch.setattr(transformers.BertModel, "forward", lambda self, *a, **kw: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        extract(lm, mini_sents[:5], store_root=tmp_path / "s3", progress=False)


def test_layer_out_of_range_in_config(tiny_bert_dir, small_files, tmp_path, capsys):
    from probekit.runner.experiment import run_experiment

    cfg = tiny_config(tiny_bert_dir, small_files, tmp_path, layers=[99])
    with pytest.raises(ConfigError, match=r"(?i)layer 99 is out of range.*valid layers are 0\.\.2"):
        run_experiment(cfg, progress=False)
    # refused before anything is extracted: no store was written
    assert not (tmp_path / "stores").exists() or not any((tmp_path / "stores").iterdir())
    (tmp_path / "c.yaml").write_text(cfg.replace(layers=[3]).to_yaml())
    from probekit.cli import main

    assert main(["-q", "run", str(tmp_path / "c.yaml")]) == 1
    check_cli_error(1, capsys.readouterr().err, "layer 3 is out of range", "0..2")


def test_task_with_a_single_label_in_train(tiny_bert_dir, tmp_path, capsys):
    """Every train word is a NOUN: a upos probe could learn nothing; say so instead of reporting 100%."""
    from probekit.runner.experiment import run_experiment

    nouns = [sentence_block([("Dogs", "NOUN"), ("cats", "NOUN"), ("birds", "NOUN")], f"s{i}") for i in range(4)]
    mixed = [sentence_block([("Dogs", "NOUN"), ("bark", "VERB")], f"m{i}") for i in range(3)]
    files = {"train": str(write_conllu_text(tmp_path / "train.conllu", nouns)),
             "dev": str(write_conllu_text(tmp_path / "dev.conllu", mixed)),
             "test": str(write_conllu_text(tmp_path / "test.conllu", mixed))}
    cfg = tiny_config(tiny_bert_dir, files, tmp_path, tasks=["upos"])
    with pytest.raises(TaskError, match="train split has a single label \\('NOUN'\\)"):
        run_experiment(cfg, progress=False)
    (tmp_path / "c.yaml").write_text(cfg.to_yaml())
    from probekit.cli import main

    rc = main(["-q", "run", str(tmp_path / "c.yaml")])
    check_cli_error(rc, capsys.readouterr().err, "single label", "upos")


def test_every_error_type_is_a_probekit_error():
    for cls in (ConfigError, DataError, ModelError, StoreError, TaskError):
        assert issubclass(cls, ProbekitError) and cls.exit_code == 1


def test_a_run_that_fails_on_its_input_leaves_no_results_folder(tmp_path):
    from probekit.config import ExperimentConfig
    from probekit.runner.experiment import run_experiment

    cfg = ExperimentConfig(name="bad", dataset="conllu", files={"train": str(tmp_path / "missing.conllu"),
                                                                 "dev": str(tmp_path / "missing.conllu"),
                                                                 "test": str(tmp_path / "missing.conllu")},
                           results_dir=str(tmp_path / "results"))
    with pytest.raises(DataError, match="missing.conllu"):
        run_experiment(cfg, progress=False)
    assert not (tmp_path / "results" / "bad").exists()
