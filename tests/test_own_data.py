"""Your own data: JSONL / CSV / Hugging Face datasets with labels of your own (Sentence.extra), tasks on them
(``label: extra.NAME``), Python tasks from a config (``module:function``, Task objects). No network."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from probekit._extras import MissingExtraError
from probekit.config import ExperimentConfig
from probekit.data.conllu_io import read_conllu
from probekit.data.own_data import Columns, from_hf, load_own, read_csv, read_jsonl
from probekit.errors import ConfigError, DataError, TaskError
from probekit.runner.data import load_data
from probekit.runner.experiment import run_experiment
from probekit.tasks import Task, extra_task, get_task
from probekit.tasks.base import _PY_TASKS, load_task_file

RECORDS = [
    {"tokens": ["The", "cat", "sat"], "ner": ["O", "B", None], "topic": "animals", "n": 3},
    {"tokens": ["Dogs", "bark"], "ner": ["B", "O"], "topic": None, "n": 2},
]


def _jsonl(path: Path, records=RECORDS) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def _forget_python_tasks():
    """Python tasks are known by name for the rest of a process; each test starts without those of others."""
    yield
    _PY_TASKS.clear()


# --------------------------------------------------------------------------------------------- reading

def test_jsonl_lists_are_word_labels_and_values_sentence_labels(tmp_path):
    a, b = read_jsonl(_jsonl(tmp_path / "d.jsonl"))
    assert (a.sent_id, a.text, a.words, b.sent_id) == ("d.jsonl#0", "The cat sat", ["The", "cat", "sat"], "d.jsonl#1")
    assert a.extra == {"ner": ["O", "B", None], "topic": "animals", "n": "3"}  # numbers as the file spells them
    assert b.extra["topic"] is None and not a.has_syntax and a.upos == ["_"] * 3  # no UD annotation claimed
    assert [s.sent_id for s in read_jsonl(tmp_path / "d.jsonl", limit=1)] == ["d.jsonl#0"]
    only = read_jsonl(tmp_path / "d.jsonl", columns=Columns(word=("ner",)))
    assert only[0].extra == {"ner": ["O", "B", None]}


def test_id_and_text_columns_place_the_words_in_the_text(tmp_path):
    recs = [{"sid": "s1", "words": ["I", "do", "n't", "know"], "sentence": "I don't  know", "neg": [0, 0, 1, 0]}]
    [s] = read_jsonl(_jsonl(tmp_path / "t.jsonl", recs), columns=Columns(tokens="words", id="sid", text="sentence"))
    assert (s.sent_id, s.text, s.spans) == ("s1", "I don't  know", [(0, 1), (2, 4), (4, 7), (9, 13)])
    assert s.space_after == [True, False, True, True] and s.extra == {"neg": ["0", "0", "1", "0"]}


def test_a_jsonl_export_of_a_treebank_reads_back_the_same_words_text_and_labels(tmp_path, mini_sents):
    """What the model reads (text, and each word's span in it, multiword tokens included) and the labels are those of
    the CoNLL-U sentences: a task on an own column equals the built-in one on the same annotation."""
    recs = [{"id": s.sent_id, "text": s.text, "tokens": s.words, "upos": s.upos} for s in mini_sents]
    own = read_jsonl(_jsonl(tmp_path / "mini.jsonl", recs), columns=Columns(id="id", text="text"))
    assert [(s.sent_id, s.text, s.spans) for s in own] == [(s.sent_id, s.text, s.spans) for s in mini_sents]
    assert any(s.mwts for s in mini_sents)
    upos = get_task("upos")
    own_upos = extra_task("own_upos", "word", upos.labels, column="upos")
    assert own_upos.encode(own).tolist() == upos.encode(mini_sents).tolist()


def test_csv_splits_tokens_and_declared_word_columns(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text('tokens,pos,label\n"The cat sat",DET NOUN VERB,yes\nDogs bark,NOUN VERB,\n', encoding="utf-8")
    a, b = read_csv(p, columns=Columns(word=("pos",), sentence=("label",)))
    assert a.words == ["The", "cat", "sat"] and a.extra == {"pos": ["DET", "NOUN", "VERB"], "label": "yes"}
    assert b.extra == {"pos": ["NOUN", "VERB"], "label": None}  # an empty cell: no label
    assert read_csv(p)[0].extra == {"pos": "DET NOUN VERB", "label": "yes"}  # undeclared: sentence columns
    t = tmp_path / "d.tsv"
    t.write_text("text\ttopic\nHello there\tgreeting\n", encoding="utf-8")
    [s] = read_csv(t, columns=Columns(tokens="text"))
    assert s.words == ["Hello", "there"] and s.extra == {"topic": "greeting"}


def _bad(tmp_path: Path, name: str, content, **cols) -> str:
    p = tmp_path / name
    p.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    reader = read_jsonl if name.endswith(".jsonl") else read_csv
    with pytest.raises(DataError) as info:
        reader(p, columns=Columns(**cols))
    msg = str(info.value)
    assert "\n" not in msg, msg
    return msg


@pytest.mark.parametrize("name, text, cols, needles", [
    ("a.jsonl", '{"tokens": ["a"]}\n{"tokens": ["b"\n', {}, [":2:", "not valid JSON"]),
    ("b.jsonl", '["a"]\n', {}, [":1:", "expected a JSON object"]),
    ("c.jsonl", '{"words": ["a"]}\n', {}, [":1:", "no key 'tokens'", "columns.tokens"]),
    ("d.jsonl", '{"tokens": ["a", "b"], "ner": ["O"]}\n', {}, [":1:", "key 'ner'", "1 labels for 2 tokens"]),
    ("e.jsonl", '{"tokens": ["a"], "ner": ["O"]}\n{"tokens": ["b"], "nre": ["O"]}\n', {},
     [":2:", "['nre'] not in the first record"]),
    ("f.jsonl", '{"tokens": ["a"], "ner": ["O"]}\n{"tokens": ["b"], "ner": "O"}\n', {},
     [":2:", "key 'ner' is a word column"]),
    ("g.jsonl", '{"tokens": ["a"], "meta": {"x": 1}}\n', {}, [":1:", "key 'meta' holds a dict"]),
    ("h.jsonl", '{"tokens": ["a", " "]}\n', {}, [":1:", "key 'tokens': token 2 is empty"]),
    ("i.jsonl", '{"tokens": "a b"}\n', {}, [":1:", "key 'tokens' must be a list of strings"]),
    ("j.jsonl", '{"tokens": ["a", "b"], "text": "a c"}\n', {"text": "text"}, [":1:", "key 'text'", "not found"]),
    ("k.jsonl", '{"tokens": ["a"]}\n', {"word": ("ner",)}, [":1:", "no key 'ner' (named in columns.word)"]),
    ("l.jsonl", b'{"tokens": ["a"]}\n{"tokens": ["\xff"]}\n', {}, [":2:", "not valid UTF-8"]),
    ("m.jsonl", "\n\n", {}, ["m.jsonl: no sentences"]),
    ("a.csv", "tokens,label\na b,x,extra\n", {}, [":2:", "3 cells for 2 columns"]),
    ("b.csv", "words,label\na b,x\n", {}, [":2:", "no key 'tokens'"]),
    ("c.csv", "tokens,pos\na b,X\n", {"word": ("pos",)}, [":2:", "key 'pos' has 1 labels for 2 tokens"]),
    ("d.csv", "tokens,tokens\na,b\n", {}, [":1:", "named twice"]),
])
def test_bad_input_is_one_line_naming_file_line_and_key(tmp_path, name, text, cols, needles):
    msg = _bad(tmp_path, name, text, **cols)
    assert str(tmp_path / name) in msg and all(n in msg for n in needles), msg


def test_bad_columns_settings_are_config_errors():
    with pytest.raises(ConfigError, match="Unknown columns key 'tokenz'.*'tokens'"):
        Columns.from_mapping({"tokenz": "w"})
    with pytest.raises(ConfigError, match="named twice"):
        Columns.from_mapping({"tokens": "w", "word": ["w"]})
    with pytest.raises(ConfigError, match="'columns' is for dataset jsonl, csv or hf"):
        ExperimentConfig(dataset="ud_ewt", columns={"tokens": "w"})
    assert Columns.from_mapping({"word": "ner"}).word == ("ner",)


def test_own_data_is_identified_by_its_sentences_and_labels(tmp_path):
    p = _jsonl(tmp_path / "d.jsonl")
    _, all_cols = load_own("jsonl", p)
    _, ner_only = load_own("jsonl", p, columns=Columns(word=("ner",)))
    sents, limited = load_own("jsonl", p, limit=1)
    assert all_cols != ner_only and limited == all_cols and len(sents) == 1


# ------------------------------------------------------------------------------------------------ tasks

def _task_file(folder: Path, **spec) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / f"{spec['name']}.yaml"
    p.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return p


def test_label_extra_reads_own_columns_at_both_levels(tmp_path):
    sents = read_jsonl(_jsonl(tmp_path / "d.jsonl"))
    ner = load_task_file(_task_file(tmp_path / "t", name="ner", level="word", labels=["O", "B"], label="extra.ner"))
    topic = load_task_file(_task_file(tmp_path / "t", name="topic", level="sentence", labels=["animals"],
                                      label="extra.topic"))
    assert ner.encode(sents).tolist() == [0, 1, -1, 1, 0]
    assert topic.encode(sents).tolist() == [0, -1]
    twin = extra_task("ner", "word", ["O", "B"])  # the Python way to the same labels
    assert twin.encode(sents).tolist() == ner.encode(sents).tolist()


def test_extra_label_errors_say_what_to_do(tmp_path, mini_sents):
    sents = read_jsonl(_jsonl(tmp_path / "d.jsonl"))
    with pytest.raises(TaskError, match="holds one label per word, but the task is sentence-level"):
        extra_task("ner", "sentence", ["O", "B"]).encode(sents)
    with pytest.raises(TaskError, match=r"has no column 'nre' of its own.*its own columns: n, ner, topic"):
        extra_task("nre", "word", ["O"]).encode(sents)
    with pytest.raises(TaskError, match="none \\(a CoNLL-U sentence has none\\)"):
        extra_task("ner", "word", ["O"]).encode(mini_sents)
    bad = [({"label": "ner"}, "'label' must be extra.NAME"),
           ({"label": "extra.ner", "label_fn": "upos"}, "exactly one of 'label_fn'"),
           ({}, "exactly one of 'label_fn'"),
           ({"label": "extra.ner", "params": {"x": 1}}, "has none")]
    for extra, needle in bad:
        p = _task_file(tmp_path / "bad", name="t", level="word", labels=["O"], **extra)
        with pytest.raises(TaskError, match=needle):
            load_task_file(p)


def make_task() -> Task:
    """A Python task for the ``module:function`` tests (this module is importable as test_own_data)."""
    return extra_task("own_ner", "word", ["O", "B"], column="ner", description="NER from my data")


def not_a_task():
    return "ner"


def test_module_function_tasks_from_a_config(tmp_path):
    cfg = ExperimentConfig.from_dict({"tasks": ["test_own_data:make_task", "upos"]})
    assert [get_task(t).name for t in cfg.tasks] == ["own_ner", "upos"]
    assert cfg.task("own_ner").params == {"column": "ner", "level": "word"}
    assert get_task("own_ner").description == "NER from my data"  # known by name once resolved
    assert yaml.safe_load(cfg.to_yaml())["tasks"] == ["test_own_data:make_task", "upos"]  # reruns from config.yaml
    with pytest.raises(ConfigError, match="'no_such_module:f' cannot be imported"):
        ExperimentConfig.from_dict({"tasks": ["no_such_module:f"]})
    with pytest.raises(ConfigError, match="gave a str, not a probekit Task"):
        ExperimentConfig.from_dict({"tasks": ["test_own_data:not_a_task"]})


def test_task_objects_in_an_experiment_config():
    mine = extra_task("topic", "sentence", ["animals"])
    cfg = ExperimentConfig(tasks=[mine, "upos"])
    assert cfg.tasks[0] is mine and cfg.task("topic") is mine and get_task("topic") is mine
    assert cfg.to_dict()["tasks"] == ["topic", "upos"] and "topic" in cfg.to_yaml()
    with pytest.raises(ConfigError, match="has the name of the task file .*upos.yaml"):
        ExperimentConfig(tasks=[extra_task("upos", "word", ["X"])])
    with pytest.raises(ConfigError, match="lists topic more than once"):
        ExperimentConfig(tasks=[mine, extra_task("topic", "sentence", ["animals"])])
    with pytest.raises(ConfigError, match="task names, 'module:function' or Task objects"):
        ExperimentConfig(tasks=[3])


# ----------------------------------------------------------------------------------- Hugging Face datasets

def test_without_datasets_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(MissingExtraError) as info:
        from_hf("anything")
    assert "[hf]" in str(info.value) and "\n" not in str(info.value)


def _hf_dataset():
    datasets = pytest.importorskip("datasets")
    feats = datasets.Features({"tokens": datasets.Sequence(datasets.Value("string")),
                               "ner": datasets.Sequence(datasets.ClassLabel(names=["O", "B"])),
                               "topic": datasets.ClassLabel(names=["animals", "weather"])})
    rows = {"tokens": [["The", "cat", "sat"], ["It", "rains"]], "ner": [[0, 1, 0], [0, 0]], "topic": [0, 1]}
    return datasets, datasets.Dataset.from_dict(rows, features=feats)


def test_hf_dataset_gives_class_names_and_reads_from_disk(tmp_path):
    import probekit as pk

    datasets, ds = _hf_dataset()
    a, b = from_hf(ds)
    assert a.words == ["The", "cat", "sat"] and a.extra == {"ner": ["O", "B", "O"], "topic": "animals"}
    assert b.extra["topic"] == "weather"
    dd = datasets.DatasetDict(train=ds, validation=ds.select([1]))
    dd.save_to_disk(str(tmp_path / "saved"))
    [s] = pk.load_sentences(f"hf:{tmp_path / 'saved'}", "validation")
    assert s.words == ["It", "rains"]
    with pytest.raises(DataError, match="Unknown split of Hugging Face dataset .*'dev'.*validation"):
        from_hf(dd, "dev")
    with pytest.raises(DataError, match="could not be loaded"):
        from_hf(str(tmp_path / "nothing-here"))
    cfg = ExperimentConfig(dataset=f"hf:{tmp_path / 'saved'}", splits={"train": "train", "dev": "validation",
                                                                        "test": "validation"})
    data, fp = load_data(cfg)
    assert [len(data[r]) for r in ("train", "dev", "test")] == [2, 1, 1]
    assert fp["dev"]["file"] == f"hf:{tmp_path / 'saved'}[validation]"


# ------------------------------------------------------------------------------------------- end to end

def test_an_experiment_on_own_jsonl_with_a_python_task(tmp_path, tiny_bert_dir):
    recs = [{"tokens": ["the", "cat", "sat", "down"], "ner": ["O", "B", "O", "O"], "topic": "animals"},
            {"tokens": ["rain", "falls", "today"], "ner": ["B", "O", "O"], "topic": "weather"},
            {"tokens": ["a", "dog", "runs"], "ner": ["O", "B", "O"], "topic": "animals"},
            {"tokens": ["snow", "is", "cold"], "ner": ["B", "O", "O"], "topic": "weather"}] * 3
    files = {role: str(_jsonl(tmp_path / f"{role}.jsonl", recs)) for role in ("train", "dev", "test")}
    topic = extra_task("topic", "sentence", ["animals", "weather"])
    cfg = ExperimentConfig(name="own", models=[str(tiny_bert_dir)], dataset="jsonl", files=files,
                           tasks=["test_own_data:make_task", topic], sentence_poolings=["mean"], seeds=[0],
                           mdl=False, random_baseline=False, control_tasks=False, store_dir=str(tmp_path / "stores"),
                           results_dir=str(tmp_path / "results"), figures=["png"])
    res = run_experiment(cfg, progress=False)
    df = pd.read_csv(res.folder / "results.csv")
    assert set(df.task) == {"own_ner", "topic"}
    written = yaml.safe_load((res.folder / "config.yaml").read_text())
    assert written["dataset"] == "jsonl" and written["tasks"] == ["test_own_data:make_task", "topic"]


def test_conllu_sentences_have_no_own_columns(mini_sents, tmp_path):
    assert all(s.extra == {} for s in mini_sents)
    from conftest import MINI_CONLLU

    cached = read_conllu(MINI_CONLLU, cache_dir=tmp_path)  # through the parse cache (a record with the new field)
    assert read_conllu(MINI_CONLLU, cache_dir=tmp_path) == cached and cached[0].extra == {}
