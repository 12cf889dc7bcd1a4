"""Sentence intervals, layer/model significance, error analysis and `compare` on synthetic predictions."""
import json
import logging

import numpy as np
import pandas as pd
import pytest

from probekit.errors import DataError
from probekit.report import compare as report_compare
from probekit.results import analysis, error_analysis, sentence_stats


def _pred(p_by_layer, model="m", n_sent=120, seed=0, labels=("not_aux", "aux")):
    rng = np.random.default_rng(seed)
    lens = rng.integers(3, 10, n_sent)
    sent = np.repeat(np.arange(n_sent), lens)
    widx = np.concatenate([np.arange(n) for n in lens])
    gold = rng.integers(0, 2, sent.size)
    frames = []
    for layer, p in p_by_layer.items():
        right = rng.random(sent.size) < p
        guess = np.where(right, gold, 1 - gold)
        frames.append(pd.DataFrame({"model": model, "task": "aux_verb", "probe": "linear", "pooling": "first",
                                    "seed": 0, "layer": layer, "sentence_id": [f"s{i}" for i in sent],
                                    "sentence": sent, "word_index": widx, "word": "w", "gold": np.array(labels)[gold],
                                    "predicted": np.array(labels)[guess], "probability": 0.9}))
    return pd.concat(frames, ignore_index=True)


def _summary(pred, dev_best):
    rows = []
    for (model, layer), part in pred.groupby(["model", "layer"]):
        acc = float((part["gold"] == part["predicted"]).mean())
        for split, v in (("test", acc), ("dev", 1.0 if layer == dev_best else 0.5)):
            rows.append({"experiment": "e", "model": model, "model_kind": "encoder", "task": "aux_verb",
                         "level": "word", "method": "probe", "probe": "linear", "control": False, "pooling": "first",
                         "layer": str(layer), "split": split, "metric": "accuracy", "mean": v, "ci_lo": v,
                         "ci_hi": v, "n_seeds": 1})
    return pd.DataFrame(rows)


def test_layer_tests_find_the_real_difference_only():
    pred = _pred({0: 0.6, 1: 0.9, 2: 0.9})
    summary = _summary(pred, dev_best=1)
    counts, n = sentence_stats.counts_table(pred, analysis.labels_of)
    s = sentence_stats.add_intervals(summary, counts, n)
    test = s[s["split"] == "test"]
    assert (test["sent_lo"] <= test["mean"]).all() and (test["mean"] <= test["sent_hi"]).all()
    assert s[s["split"] == "dev"]["sent_lo"].isna().all()
    t = sentence_stats.layer_tests(s, counts, n, metrics=("accuracy",))
    vs = t[t["comparison"] == "vs_best"].set_index("layer_a")
    assert vs.loc[0, "significant"] and vs.loc[0, "diff"] < 0
    assert not vs.loc[2, "significant"]  # same quality: not significantly different from the best
    words = " ".join(sentence_stats.describe(t))
    assert "best layer 1" in words and "[2]" in words


def test_model_tests_pair_a_model_with_its_twin():
    a, b = _pred({0: 0.9, 1: 0.9}, model="m"), _pred({0: 0.9, 1: 0.6}, model="m@random", seed=0)
    pred = pd.concat([a, b])
    counts, n = sentence_stats.counts_table(pred, analysis.labels_of)
    t = sentence_stats.model_tests(counts, counts, {}, {}, n, metrics=("accuracy",), pairs=[("m", "m@random")])
    t = t.set_index("layer_a")
    assert t.loc[1, "significant"] and t.loc[1, "diff"] > 0
    assert t.loc[0, "diff"] == 0 and not t.loc[0, "significant"]  # same gold, same rng draw: identical predictions


def test_error_analysis_matches_sklearn():
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support
    pred = _pred({3: 0.8})
    pl = error_analysis.per_label(pred).set_index("label")
    p, r, f, sup = precision_recall_fscore_support(pred["gold"], pred["predicted"], labels=["aux", "not_aux"])
    assert pl.loc[["aux", "not_aux"], "f1"].to_numpy() == pytest.approx(f)
    assert pl.loc[["aux", "not_aux"], "support"].tolist() == sup.tolist()
    (key, m), = error_analysis.confusions(pred).items()
    assert key[4] == 3
    assert m.to_numpy().tolist() == confusion_matrix(pred["gold"], pred["predicted"],
                                                     labels=list(m.index)).tolist()


def test_word_majority_and_seen_unseen():
    from probekit.data.conllu_io import Sentence
    from probekit.tasks import get_task

    task = get_task("aux_verb")
    train = [Sentence.from_words(["she", "is", "is", "here"], upos=["PRON", "AUX", "VERB", "ADV"]),
             Sentence.from_words(["is", "it"], upos=["AUX", "PRON"])]
    test = [Sentence.from_words(["is", "new", "it"], upos=["AUX", "AUX", "PRON"])]
    counts, best, majority = error_analysis.train_word_stats(train, task)
    assert best["is"] == "aux" and majority == "not_aux" and counts["is"] == 3
    m = error_analysis.word_majority(test, task, best, majority)
    assert m["accuracy"] == pytest.approx(2 / 3)  # "new" is unseen: majority not_aux, gold aux
    pred = pd.DataFrame({"model": "m", "task": "aux_verb", "probe": "linear", "pooling": "first", "seed": 0,
                         "layer": 0, "sentence": 0, "word_index": [0, 1, 2], "word": ["is", "new", "it"],
                         "gold": ["aux", "aux", "not_aux"], "predicted": ["aux", "not_aux", "not_aux"]})
    w = error_analysis.by_word_type(pred, {"aux_verb": counts}).set_index(["split_by", "group"])
    assert w.loc[("seen", "seen"), "accuracy"] == 1.0 and w.loc[("seen", "unseen"), "accuracy"] == 0.0
    assert w.loc[("band", "1-9"), "n"] == 2


def test_frequency_bands_at_their_edges():
    """Every train count lands in the one band of BANDS whose range holds it, at each band's edges too."""
    from collections import Counter

    counts = Counter({f"w{n}": n for n in (1, 9, 10, 99, 100, 999, 1000, 5000)})
    words = ["unseen"] + list(counts)
    pred = pd.DataFrame({"model": "m", "task": "t", "probe": "linear", "pooling": "first", "seed": 0, "layer": 0,
                         "sentence": 0, "word_index": range(len(words)), "word": words,
                         "gold": "a", "predicted": ["a"] * 5 + ["b"] * 4})
    w = error_analysis.by_word_type(pred, {"t": counts})
    band = w[w["split_by"] == "band"].set_index("group")
    assert band["n"].to_dict() == {"unseen": 1, "1-9": 2, "10-99": 2, "100-999": 2, ">=1000": 2}
    assert band["accuracy"].to_dict() == {"unseen": 1.0, "1-9": 1.0, "10-99": 1.0, "100-999": 0.0, ">=1000": 0.0}


def test_no_test_words_is_a_clear_error():
    with pytest.raises(DataError, match="no test words"):
        sentence_stats.counts_table(_pred({0: 0.9}).iloc[:0], analysis.labels_of)


def test_compare_refuses_different_test_sets(tmp_path):
    for name, limit in (("a", 100), ("b", 200)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "provenance.json").write_text(json.dumps(
            {"data": {"test": {"file": f"/x/{name}", "sha256": "abc", "limit": limit}}}))
    with pytest.raises(DataError, match="different test sets"):
        report_compare.compare(tmp_path / "a", tmp_path / "b")


def test_predictions_round_trip(tmp_path):
    from probekit.data.conllu_io import Sentence
    from probekit.results import predictions

    sents = [Sentence.from_words(["I", "did", "n't"], sent_id="a"), Sentence.from_words(["Go", "."], sent_id="b")]
    mask = np.array([0, 1, 2, 3])  # the first four words are labelled
    items = predictions.item_index(sents, mask, "word")
    assert items["sentence"].tolist() == [0, 0, 0, 1] and items["word_index"].tolist() == [0, 1, 2, 0]
    predictions.save_layer(tmp_path, "k", gold=[0, 1, 1, 0], pred=[0, 1, 0, 0], proba=[0.9, 0.8, 0.6, 0.7],
                           items=items, model="m", task="aux_verb", probe="linear", pooling="first", seed=0, layer=2)
    recs = predictions.gather(tmp_path, ["k", "missing"])
    assert len(recs) == 1 and recs[0]["layer"] == 2 and recs[0]["model"] == "m"
    predictions.write_predictions(tmp_path / predictions.FILE, recs, sents, analysis.labels_of)
    df = predictions.read_predictions(tmp_path)
    assert df["word"].tolist() == ["I", "did", "n't", "Go"] and df["sentence_id"].tolist() == ["a", "a", "a", "b"]
    assert df["predicted"].tolist() == ["not_aux", "aux", "not_aux", "not_aux"]
    with pytest.raises(DataError, match="no saved predictions"):
        predictions.read_predictions(tmp_path / "nowhere")


def test_band_and_confusion_figures(tmp_path):
    from probekit.report.significance_figures import confusion_matrix, sentence_bands

    pred = _pred({0: 0.6, 1: 0.9, 2: 0.9})
    counts, n = sentence_stats.counts_table(pred, analysis.labels_of)
    s = sentence_stats.add_intervals(_summary(pred, dev_best=1), counts, n)
    tests = sentence_stats.layer_tests(s, counts, n, metrics=("accuracy",))
    out = sentence_bands(s, tests, tmp_path / "bands", ("png",))
    (key, m), = error_analysis.confusions(pred[pred["layer"] == 1]).items()
    out += confusion_matrix(m, "m aux_verb, layer 1", tmp_path / "confusion", ("png",))
    assert [p.name for p in out] == ["bands.png", "confusion.png"] and all(p.stat().st_size > 1000 for p in out)
    assert sentence_bands(s.drop(columns=["sent_lo", "sent_hi"]), tests, tmp_path / "none", ("png",)) == []


def test_experiment_writes_the_rigour_files_and_compare_runs(tmp_path, tiny_bert_dir, data_dir, capsys, caplog):
    """A tiny run writes predictions, intervals, significance and error files; `probekit compare` reads two runs."""
    from probekit.cli import main
    from probekit.config import ExperimentConfig
    from probekit.report.build import build_report
    from probekit.runner.experiment import run_experiment

    cfg = dict(models=[str(tiny_bert_dir)], dataset="ud_ewt", data_dir=str(data_dir),
               limit={"train": 40, "dev": 15, "test": 15}, tasks=["aux_verb", "upos"], seeds=[0], mdl=False,
               random_baseline=False, store_dir=str(tmp_path / "stores"), results_dir=str(tmp_path / "results"),
               figures=["png"])
    res = run_experiment(ExperimentConfig(name="a", **cfg), progress=False)
    f = res.folder
    for name in ("predictions.csv.gz", "significance.csv", "significance.md", "errors/per_label.csv",
                 "errors/by_word_type.csv", "errors/word_majority.csv", "figures/sentence_bands.png"):
        assert (f / name).is_file(), name
    s = pd.read_csv(f / "summary.csv")
    acc = s[(s.metric == "accuracy") & (s.split == "test") & (s.probe == "linear") & ~s.control.astype(bool)]
    assert acc.sent_lo.notna().all() and (acc.sent_lo <= acc["mean"] + 1e-12).all()
    assert set(s[s.probe == "word_majority"].task) == {"aux_verb", "upos"}
    assert "best layer" in (f / "significance.md").read_text()
    assert "95% CI (sent.)" in "".join(p.read_text() for p in build_report(f, ("png",)) if p.suffix == ".md")
    # a rerun with the same units keeps the analysis files; a file that no longer matches its digest is rewritten
    recorded = json.loads((f / analysis.RECORD).read_text())["files"]
    assert set(recorded) >= {"predictions.csv.gz", "errors/per_label.csv", "errors/by_word_type.csv"}
    assert any(name.startswith("errors/confusion/") for name in recorded)
    before = {name: ((f / name).read_bytes(), (f / name).stat().st_mtime_ns) for name in recorded}
    run_experiment(ExperimentConfig(name="a", **cfg), progress=False)
    assert {name: ((f / name).read_bytes(), (f / name).stat().st_mtime_ns) for name in recorded} == before
    (f / "errors/per_label.csv").write_text("edited\n")
    with caplog.at_level(logging.WARNING, logger="probekit"):
        run_experiment(ExperimentConfig(name="a", **cfg), progress=False)
    assert any("per_label.csv" in r.getMessage() and "sha256" in r.getMessage() for r in caplog.records)
    assert {name: (f / name).read_bytes() for name in recorded} == {name: b for name, (b, _) in before.items()}
    run_experiment(ExperimentConfig(name="b", **{**cfg, "seeds": [1]}), progress=False)
    assert main(["compare", str(f), str(f.parent / "b")]) == 0
    assert "vs" in capsys.readouterr().out
    other = dict(cfg, limit={"train": 40, "dev": 15, "test": 16})
    run_experiment(ExperimentConfig(name="c", **other), progress=False)
    with pytest.raises(DataError, match="different test sets"):
        report_compare.compare(f, f.parent / "c")


def test_describe_states_the_layer_tests_beside_the_model_tests():
    """Layer tests have no second model (model_b empty): they must still be said in words."""
    rows = [dict(model="m", task="upos", probe="linear", pooling="first", metric="accuracy", comparison="vs_best",
                 layer_a=a, layer_b=3, diff=d, lo=d - 0.002, hi=d + 0.002, p=0.5, p_holm=p, significant=p < 0.05,
                 model_b=None, probe_b=None, pooling_b=None) for a, d, p in ((2, -0.001, 0.6), (1, -0.03, 0.002))]
    rows.append(dict(model="m", task="upos", probe="linear", pooling="first", metric="accuracy",
                     comparison="same_layer", layer_a=3, layer_b=3, diff=0.2, lo=0.19, hi=0.21, p=0.002,
                     p_holm=0.002, significant=True, model_b="m@random", probe_b="linear", pooling_b="first"))
    lines = sentence_stats.describe(pd.DataFrame(rows))
    assert any("best layer 3 (on dev); not significantly different from layer(s) [2]" in line for line in lines)
    assert any("vs m@random" in line for line in lines)
