"""Relation-level tasks (pair, span, choice): their items, span features, the attention pooling, the runner."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import MINI_CONLLU

from probekit.config import ExperimentConfig
from probekit.data.conllu_io import Sentence, read_conllu
from probekit.errors import ConfigError, DataError, TaskError
from probekit.probing.spans import fit_attention_layers, span_features
from probekit.runner import data as rd
from probekit.runner import relations as rel
from probekit.tasks import get_task
from probekit.tasks.base import RelationItems

pytestmark = pytest.mark.usefixtures("one_thread")


def _by_id(sents, sid):
    return next(s for s in sents if s.sent_id == sid)


def test_subject_span_items_on_mini(mini_sents):
    task = get_task("subject_span")
    assert task.level == "span" and task.labels == ["not_subj", "subj"]
    spans = {sid: [(a, b, lab) for a, b, lab in task.label(_by_id(mini_sents, sid))]
             for sid in ("mini-01", "mini-02", "mini-05")}
    # I don't think they're gonna win: the pronouns I and they, both subjects
    assert spans["mini-01"] == [(0, 1, "subj"), (4, 5, "subj")]
    # The cake | was eaten | by the children: the subtree of children takes its case marker "by"
    assert spans["mini-02"] == [(0, 2, "subj"), (4, 7, "not_subj")]
    # Prices rose 4.5% in 2023, while wages fell: % is SYM and 2023 NUM, not nominal heads
    assert spans["mini-05"] == [(0, 1, "subj"), (8, 9, "subj")]
    items = task.items(mini_sents)
    assert (items.b > items.a).all() and set(np.unique(items.y)) == {0, 1}


def test_subject_span_leaves_out_a_discontiguous_subtree():
    # w0 (NOUN) has the dependent w2 across w1, which hangs from the root w3: w0's subtree {0, 2} has a gap
    s = Sentence.from_words(["a", "b", "c", "d"], upos=["NOUN", "NOUN", "ADJ", "VERB"], heads=[4, 4, 1, 0],
                            deprels=["nsubj", "obj", "amod", "root"])
    assert get_task("subject_span").label(s) == [(1, 2, "not_subj")]


def test_subject_of_rule():
    # "reports say that (what he did) was wrong": say has nsubj reports, was-wrong has a csubj clause "did"
    words = ["reports", "say", "that", "what", "he", "did", "was", "wrong"]
    s = Sentence.from_words(words, upos=["NOUN", "VERB", "SCONJ", "PRON", "PRON", "VERB", "AUX", "ADJ"],
                            heads=[2, 0, 8, 6, 6, 8, 8, 2],
                            deprels=["nsubj", "root", "mark", "obj", "nsubj", "csubj", "cop", "ccomp"])
    pairs = get_task("subject_of").label(s)
    assert {(v, w) for v, w, lab in pairs if lab == "subj"} == {(1, 0), (5, 4)}
    # every VERB pairs with every other word; the ADJ predicate "wrong" (head of the csubj) is no anchor
    assert len(pairs) == 2 * 7 and {v for v, _, _ in pairs} == {1, 5}


def test_dep_arc_and_dep_label_items(mini_sents):
    s = _by_id(mini_sents, "mini-02")
    assert get_task("dep_arc").label(s) == [1, 3, 3, 3, 6, 6, 3, 3]  # the root (eaten, 3) chooses itself
    labels = get_task("dep_label").label(s)
    assert (1, 3, "nsubj") in labels and (6, 3, "obl") in labels and len(labels) == 7


def test_relation_tasks_refuse_data_without_the_columns(tmp_path):
    no_tree = tmp_path / "notree.conllu"
    no_tree.write_text("# sent_id = x1\n# text = I ran\n1\tI\tI\tPRON\tPRP\t_\t_\t_\t_\t_\n"
                       "2\tran\trun\tVERB\tVBD\t_\t_\t_\t_\t_\n\n", encoding="utf-8")
    sents = read_conllu(no_tree)
    for name in ("dep_arc", "dep_label", "subject_of", "subject_span"):
        with pytest.raises(TaskError, match="x1.*HEAD and DEPREL"):
            get_task(name).items(sents)
    no_upos = Sentence.from_words(["I", "ran"], heads=[2, 0], deprels=["nsubj", "root"])
    no_upos.upos = ["_", "_"]
    with pytest.raises(TaskError, match="subject_span reads upos"):
        get_task("subject_span").items([no_upos])
    two_roots = Sentence.from_words(["I", "ran"], sent_id="r2", heads=[0, 0], deprels=["root", "root"])
    with pytest.raises(DataError, match="r2.*2 words with HEAD 0"):
        get_task("dep_arc").items([two_roots])


def test_config_routes_relation_tasks(tmp_path):
    with pytest.raises(ConfigError, match="subject_of is a pair-level task.*relations"):
        ExperimentConfig.from_dict({"tasks": ["subject_of"]})
    with pytest.raises(ConfigError, match="upos, a word-level task"):
        rel.RelationsConfig.from_dict({"tasks": ["upos"]})
    with pytest.raises(ConfigError, match="span pooling 'sum'"):
        rel.RelationsConfig.from_dict({"span_poolings": ["sum"]})
    with pytest.raises(ConfigError, match="Unknown relations setting 'epoch'"):
        rel.RelationsConfig.from_dict({"epoch": 3})
    bad = tmp_path / "t.yaml"
    bad.write_text("name: t\nlevel: tuple\nlabels: [a]\nlabel_fn: dep_arc\n", encoding="utf-8")
    from probekit.tasks.base import load_task_file
    with pytest.raises(TaskError, match="level must be one of word, sentence, pair, span, choice"):
        load_task_file(bad)


def _span_items(spans, lengths, y=None):
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    sent = np.array([k for k, _, _ in spans])
    return RelationItems("span", sent, np.array([a for _, a, _ in spans]), np.array([b for _, _, b in spans]),
                         np.zeros(len(spans), dtype=np.int64) if y is None else np.asarray(y), offsets)


def test_span_features_are_mean_max_endpoints():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(2, 9, 3)).astype(np.float32)
    items = _span_items([(0, 0, 3), (0, 1, 2), (1, 0, 4), (1, 2, 5)], [4, 5])  # sentence 1 starts at row 4
    rows = [(0, 3), (1, 2), (4, 8), (6, 9)]
    mean, mx, ends = (span_features(X, items, p) for p in ("mean", "max", "endpoints"))
    for k, (a, b) in enumerate(rows):
        assert np.allclose(mean[:, k], X[:, a:b].mean(1), atol=1e-6)
        assert np.array_equal(mx[:, k], X[:, a:b].max(1))
        assert np.array_equal(ends[:, k], np.concatenate([X[:, a], X[:, b - 1]], -1))
    with pytest.raises(ConfigError, match="learned"):
        span_features(X, items, "attention")


def test_attention_pooling_finds_the_marked_word():
    """Each span holds one marked word (feature 0 = +4) whose feature 1 carries the label; the other words carry
    noise in feature 1 of the same size. Attention on the marked word solves it; the span mean does much worse."""
    rng = np.random.default_rng(0)
    d, n_sent, L = 6, 240, 2
    X, y = [], []
    for k in range(n_sent):
        n = 6
        v = rng.normal(size=(n, d)) * 0.5
        mark = rng.integers(0, n)
        lab = rng.integers(0, 2)
        v[:, 1] = rng.choice([-2.0, 2.0], size=n)
        v[mark, 0], v[mark, 1] = 4.0, 2.0 if lab else -2.0
        X.append(v)
        y.append(lab)
    X = np.concatenate(X).astype(np.float32)[None].repeat(L, 0)
    X[1] = rng.normal(size=X[1].shape)  # layer 1: noise, chance
    parts = {"train": np.arange(0, 160), "dev": np.arange(160, 200), "test": np.arange(200, 240)}
    Xs = {r: X[:, 6 * p[0]:6 * (p[-1] + 1)] for r, p in parts.items()}
    its = {r: _span_items([(k - p[0], 0, 6) for k in p], [6] * len(p), np.asarray(y)[p]) for r, p in parts.items()}
    res = fit_attention_layers(Xs, its, n_classes=2, epochs=60, lr=0.05, batch_size=32, patience=10, device="cpu")
    acc = [(r["pred"] == its["test"].y).mean() for r in res]
    assert acc[0] >= 0.9 and acc[1] < 0.8, acc


def _cfg(tmp_path, model_dir, **kw):
    base = dict(name="t", models=[str(model_dir)], dataset="conllu",
                files={r: str(MINI_CONLLU) for r in ("train", "dev", "test")}, tasks=["subject"], seeds=[0],
                mdl=False, random_baseline=False, store_dir=str(tmp_path / "stores"),
                results_dir=str(tmp_path / "results"), device="cpu")
    base.update(kw)
    return ExperimentConfig(**base)


def test_runner_rows_baselines_cis_resume_and_figure(tmp_path, tiny_bert_dir, monkeypatch):
    cfg = _cfg(tmp_path, tiny_bert_dir)
    rcfg = rel.RelationsConfig(span_poolings=["mean", "attention"], epochs=2, bootstrap=100)
    df = rel.run_relations(cfg, rcfg, progress=False).table()
    probes = df[df.method == "probe"]
    assert set(probes.layer.dropna().astype(int)) == {0, 1, 2}  # embeddings + 2 blocks of the tiny BERT
    assert set(zip(probes.task, probes.pooling)) >= {("dep_arc", "first"), ("subject_span", "mean"),
                                                    ("subject_span", "attention"), ("dep_label", "first")}
    assert set(probes[probes.task == "dep_arc"].metric) == {"uas", "uas_ci_low", "uas_ci_high"}
    assert "pos_f1" in set(probes[probes.task == "subject_of"].metric)
    wide = probes.pivot_table(index=["task", "pooling", "layer"], columns="metric", values="value")
    for m in ("accuracy", "uas"):
        sub = wide[wide[m].notna()] if m in wide else wide.iloc[:0]
        assert ((sub[f"{m}_ci_low"] <= sub[m] + 1e-12) & (sub[m] <= sub[f"{m}_ci_high"] + 1e-12)).all()
    base = df[df.method == "baseline"]
    assert set(base.task) == {"dep_arc", "dep_label", "subject_of", "subject_span"}
    # subject_of's majority is not_subj everywhere: positive-class F1 0
    assert base[(base.task == "subject_of") & (base.metric == "pos_f1")].value.iloc[0] == 0.0

    def no_model(*a, **k):
        raise AssertionError("a rerun must reuse the finished units")

    monkeypatch.setattr(rd, "load_config_model", no_model)
    again = rel.run_relations(cfg, rcfg, progress=False).table()
    assert again.equals(df)
    # the command line runs the same units (finished: no model is loaded) and writes the table and the figure
    path = tmp_path / "rel.yaml"
    path.write_text(cfg.replace(relations={"span_poolings": ["mean", "attention"], "epochs": 2,
                                           "bootstrap": 100}).to_yaml())
    assert rel.main([str(path)]) == 0
    out = tmp_path / "results" / cfg.name / "relations"
    assert (out / "results.csv").is_file() and (out / "figures" / "relations_by_layer.png").is_file()

    from matplotlib.figure import Figure
    fig = rel.relations_by_layer(df, tmp_path / "fig" / "rel", formats=("png",))
    assert isinstance(fig, Figure) and (tmp_path / "fig" / "rel.png").is_file()
    ax = Figure().subplots()
    assert rel.relations_by_layer(df, ax=ax) is ax.figure and len(ax.lines) >= 5


def test_majority_offset_baseline_for_choice():
    task = get_task("dep_arc")
    train = RelationItems("choice", np.zeros(4, int), np.arange(4), np.arange(4), np.array([1, 2, 3, 3]),
                          np.array([0, 4]))
    test = RelationItems("choice", np.zeros(3, int), np.arange(3), np.arange(3), np.array([1, 1, 1]),
                         np.array([0, 3]))
    # train offsets: +1, +1, +1, 0: the head is the next word
    assert rel.majority_prediction(task, {"train": train, "test": test}).tolist() == [1, 2, 3]


def test_probekit_run_includes_the_relation_rows_and_figure(tmp_path, tiny_bert_dir):
    from probekit.runner.experiment import run_experiment

    cfg = _cfg(tmp_path, tiny_bert_dir, control_tasks=False, layers=[0, 2],
               relations={"tasks": ["subject_span"], "span_poolings": ["endpoints"], "bootstrap": 100})
    res = run_experiment(cfg, progress=False)
    rows = res.table[res.table.task == "subject_span"]
    assert set(rows[rows.method == "probe"].layer.astype(int)) == {0, 2}
    assert set(res.table.task) == {"subject", "subject_span"}
    assert (res.folder / "figures" / f"relations_by_layer_{str(tiny_bert_dir).replace('/', '_')}.png").is_file()


def test_runner_on_a_decoder(tmp_path, tiny_gpt2_dir):
    """A decoder's word vectors (last subword, left context only) go through the same runner."""
    cfg = _cfg(tmp_path, tiny_gpt2_dir)
    rcfg = rel.RelationsConfig(tasks=["dep_arc", "subject_span"], span_poolings=["endpoints"], epochs=2,
                               bootstrap=100)
    df = rel.run_relations(cfg, rcfg, progress=False).table()
    probes = df[df.method == "probe"]
    assert set(probes.model_kind) == {"decoder"} and set(probes.pooling) == {"last", "endpoints"}
    assert probes[probes.metric == "uas"].value.between(0, 1).all()
