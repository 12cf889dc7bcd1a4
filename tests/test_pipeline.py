"""End to end on tiny random models: data -> store -> probes -> table -> figures, and reuse."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from probekit.activations.extract import extract
from probekit.activations.models import load_model
from probekit.config import ExperimentConfig
from probekit.errors import ConfigError
from probekit.runner.experiment import run_experiment


def _cfg(tmp_path, model_dir, data_dir, **kw):
    base = dict(name="t", models=[str(model_dir)], dataset="ud_ewt", data_dir=str(data_dir),
                limit={"train": 40, "dev": 15, "test": 15}, tasks=["aux_verb", "upos"], seeds=[0],
                mdl=False, random_baseline=False, store_dir=str(tmp_path / "stores"),
                results_dir=str(tmp_path / "results"), figures=["png"])
    base.update(kw)
    return ExperimentConfig(**base)


def test_run_experiment_end_to_end_and_warm_rerun(tmp_path, tiny_bert_dir, data_dir):
    cfg = _cfg(tmp_path, tiny_bert_dir, data_dir)
    res = run_experiment(cfg, progress=False)
    assert res.forward_passes > 0
    df = pd.read_csv(res.folder / "results.csv")
    lin = df[(df.probe == "linear") & (df.split == "test") & (df.metric == "accuracy") & (~df.control)]
    # tiny BERT has 2 blocks -> layers 0..2, for both tasks
    assert sorted(lin[lin.task == "upos"].layer.unique().tolist()) == [0, 1, 2]
    assert set(df.task) == {"aux_verb", "upos"}
    assert {"pos_f1", "macro_f1", "accuracy"} <= set(df[df.task == "aux_verb"].metric)
    assert "pos_f1" not in set(df[df.task == "upos"].metric)  # only for binary tasks
    maj = df[(df.probe == "majority") & (df.metric == "accuracy")]
    assert len(maj) == 2 and maj.value.between(0, 1).all()
    assert (res.folder / "figures" / "accuracy_by_layer.png").is_file()
    prov = json.loads((res.folder / "provenance.json").read_text())
    assert prov["config"]["tasks"] == ["aux_verb", "upos"] and "torch" in prov["packages"]
    assert prov["data"]["train"]["sha256"]
    before = (res.folder / "results.csv").read_bytes()
    # warm rerun: no forward pass, same table
    res2 = run_experiment(cfg, progress=False)
    assert res2.forward_passes == 0
    assert (res2.folder / "results.csv").read_bytes() == before


def test_train_sentences_sample_is_fixed_extracted_alone_and_keyed(tmp_path, tiny_bert_dir, data_dir):
    from probekit.runner.data import load_data

    cfg = _cfg(tmp_path, tiny_bert_dir, data_dir, limit={"train": 60, "dev": 15, "test": 15}, tasks=["aux_verb"])
    full, fp_full = load_data(cfg)
    sampled = cfg.replace(train_sentences=25, name="s")
    data, fp = load_data(sampled)
    # a fixed random subset of train, in corpus order; dev and test untouched
    ids = [s.sent_id for s in full["train"]]
    pos = [ids.index(s.sent_id) for s in data["train"]]
    assert len(pos) == 25 and pos == sorted(pos) and pos != list(range(25))
    assert [s.sent_id for s in load_data(sampled)[0]["train"]] == [s.sent_id for s in data["train"]]
    assert fp["train"]["sample"] == {"sentences": 25, "seed": 0} and "sample" not in fp_full["train"]
    assert fp["dev"] == fp_full["dev"] and fp["train"]["n_words"] == sum(len(s) for s in data["train"])
    # only the sample is extracted, and its results are not mistaken for the full data's
    res = run_experiment(sampled, progress=False)
    prov = json.loads((res.folder / "provenance.json").read_text())
    store = prov["models"][str(tiny_bert_dir)]["stores"]["train"]
    man = json.loads((Path(store) / "manifest.json").read_text())
    assert man["n_words"] == fp["train"]["n_words"]
    df = pd.read_csv(res.folder / "results.csv")
    assert set(df[df.probe == "linear"].train_size.dropna()) == {float(fp["train"]["n_words"])}
    assert run_experiment(cfg.replace(train_sentences=None), progress=False).forward_passes > 0
    with pytest.raises(Exception, match="train_sentences"):
        cfg.replace(train_sentences=0)


def test_control_selectivity_and_summary(tmp_path, tiny_bert_dir, data_dir):
    cfg = _cfg(tmp_path, tiny_bert_dir, data_dir, tasks=["aux_verb"], seeds=[0, 1])
    res = run_experiment(cfg, progress=False)
    s = res.summary
    sel = s[s.metric == "selectivity"]
    assert len(sel) == 3  # one per layer
    ctrl = res.table[(res.table.control == True) & (res.table.metric == "accuracy")]  # noqa: E712
    assert set(ctrl.seed) == {0, 1}
    acc = s[(s.metric == "accuracy") & (s.split == "test") & (s.probe == "linear") & (s.control.astype(str) == "False")]
    assert (acc.n_seeds == 2).all()
    assert (acc.ci_lo <= acc["mean"]).all() and (acc["mean"] <= acc.ci_hi).all()
    # per-layer probes give only the running-max stand-in; Tenney's expected layer needs the scalar-mix study
    assert len(s[s.metric == "expected_layer_cummax"]) == 1 and not (s.metric == "expected_layer").any()


def test_store_reuse_no_forward_pass(tmp_path, tiny_bert_dir, mini_sents):
    lm = load_model(str(tiny_bert_dir), device="cpu")
    st = extract(lm, mini_sents, store_root=tmp_path, progress=False)
    assert st.computed_shards > 0
    n_words = sum(len(s) for s in mini_sents)
    assert st[0].shape == (n_words, lm.hidden_size) and st.n_layers == lm.num_layers + 1
    assert np.array_equal(st[-1], st[lm.num_layers])
    calls = []
    orig = lm.model.forward
    lm.model.forward = lambda *a, **k: calls.append(1) or orig(*a, **k)
    st2 = extract(lm, mini_sents, store_root=tmp_path, progress=False)
    assert calls == [] and st2.computed_shards == 0
    assert st2.path == st.path
    # a different pooling is a different store
    st3 = extract(lm, mini_sents, store_root=tmp_path, word_pooling="mean", progress=False)
    assert st3.path != st.path and calls


def test_layer0_is_embedding_output(tmp_path, tiny_bert_dir, mini_sents):
    import torch

    lm = load_model(str(tiny_bert_dir), device="cpu")
    sents = mini_sents[:3]  # the first one has clitics ("n't", "'re"): first pooling reads their head subword
    st = extract(lm, sents, store_root=tmp_path, dtype="float32", progress=False)
    from probekit.activations.align import align_batch, special_layout

    a = align_batch(lm.tokenizer, sents[:1])[0]
    prefix, suffix = special_layout(lm.tokenizer)
    ids = torch.tensor([prefix + a.token_ids + suffix])
    with torch.no_grad():
        out = lm.model(input_ids=ids, output_hidden_states=True)
    first = a.heads
    for layer in (0, lm.num_layers):
        want = out.hidden_states[layer][0, [len(prefix) + t for t in first]].numpy()
        got = st[layer][:len(a.word_tokens)]
        np.testing.assert_allclose(got, want, atol=1e-4)


def test_sentence_task_poolings(tmp_path, tiny_bert_dir, data_dir):
    cfg = _cfg(tmp_path, tiny_bert_dir, data_dir, tasks=["sentence_length"],
               limit={"train": 80, "dev": 30, "test": 30})
    res = run_experiment(cfg, progress=False)
    pools = set(res.table[res.table.level == "sentence"].pooling)
    assert pools == {"cls", "mean", "last"}
    assert (res.folder / "figures" / "sentence_poolings.png").is_file()


def test_single_label_task_is_an_error(tmp_path, tiny_bert_dir, data_dir, monkeypatch):
    from probekit.errors import TaskError

    task_dir = tmp_path / "tasks"
    task_dir.mkdir()
    (task_dir / "always.yaml").write_text("name: always_x\nlevel: word\nlabels: [x, y]\n"
                                          "label_fn: 'tests.test_pipeline:_always_x'\n")
    monkeypatch.setenv("PROBEKIT_TASKS_PATH", str(task_dir))
    from probekit.tasks import base
    base._all_tasks.cache_clear()
    try:
        cfg = _cfg(tmp_path, tiny_bert_dir, data_dir, tasks=["always_x"], control_tasks=False)
        with pytest.raises(TaskError, match="single label"):
            run_experiment(cfg, progress=False)
    finally:
        base._all_tasks.cache_clear()


def _always_x(s):
    return ["x"] * len(s)


def test_notebook_api_steps(tmp_path, tiny_bert_dir, data_dir):
    import probekit as pk

    sents = {s: pk.load_sentences("ud_ewt", s, limit=25, data_dir=data_dir) for s in ("train", "dev", "test")}
    lm = pk.load_model(str(tiny_bert_dir), device="cpu")
    stores = {s: pk.extract_store(lm, sents[s], split=s, store_root=tmp_path, progress=False) for s in sents}
    assert "layers=0..2" in repr(stores["train"]) and "<table>" in stores["train"]._repr_html_()
    table = pk.probe(lm, "aux_verb", stores, sents, seeds=[0])
    assert set(table.layer.dropna().astype(int)) == {0, 1, 2}
    summary = pk.summarize(table)
    fig = pk.plot_layers(summary, tmp_path / "fig", formats=("png",))  # the Figure, saved as asked
    assert fig.axes and (tmp_path / "fig.png").stat().st_size > 1000
    # the notebook trap: sentences reloaded with another limit, stores not re-extracted
    fewer = {**sents, "test": sents["test"][:20]}
    with pytest.raises(ConfigError, match=r"stores\['test'\] holds 25 sentences .* sentences\['test'\] has 20"):
        pk.probe(lm, "aux_verb", stores, fewer, seeds=[0])
    # and a loop over models that forgets to re-extract: random-weights rows with the trained model's numbers
    rnd = pk.load_model(f"{tiny_bert_dir}@random", device="cpu")
    with pytest.raises(ConfigError, match=r"stores\['train'\] were extracted with .* not with .*@random"):
        pk.probe(rnd, "aux_verb", stores, sents, seeds=[0])


@pytest.mark.parametrize("path", sorted((__import__("pathlib").Path(__file__).resolve().parents[1] / "configs")
                                        .glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_is_valid(path):
    """Every file in configs/ loads (unknown keys and wrong types are errors) and names known tasks and models."""
    from probekit.activations.models import kind_of
    from probekit.tasks import get_task

    cfg = ExperimentConfig.from_yaml(path)
    for task in cfg.tasks:
        get_task(task)
    for model in cfg.models:
        assert kind_of(model) in ("encoder", "decoder"), model


def test_tasks_share_loaded_features(tmp_path, tiny_bert_dir, data_dir, monkeypatch):
    """Word tasks that label every word read the same rows: the features are loaded once per model, not per task."""
    import probekit.probing.features as feats

    calls = []
    real = feats.load_features
    monkeypatch.setattr(feats, "load_features", lambda *a, **k: calls.append(a[2].size) or real(*a, **k))
    run_experiment(_cfg(tmp_path, tiny_bert_dir, data_dir, tasks=["aux_verb", "upos"]), progress=False)
    assert len(calls) == 3  # train, dev, test once for both tasks
    calls.clear()
    # subject labels every word too; a sentence task reads other rows and loads its own
    run_experiment(_cfg(tmp_path, tiny_bert_dir, data_dir, tasks=["subject", "tense"], name="t2",
                        sentence_poolings=["mean"]), progress=False)
    assert len(calls) == 6


def test_probekit_run_adds_the_structural_and_erasure_studies(tmp_path, tiny_bert_dir, data_dir):
    """A config's `structural:` and `erasure:` sections run inside run_experiment: their rows join results.csv and
    the structural figures sit beside the others; a warm rerun extracts no store again."""
    cfg = _cfg(tmp_path, tiny_bert_dir, data_dir, tasks=["aux_verb", "upos"], control_tasks=False,
               structural={"kinds": ["distance"], "ranks": [None], "epochs": 2, "control": False, "bootstrap": 100},
               erasure={"effect_sentences": 4, "later": [1], "sanity_mlp": False})
    res = run_experiment(cfg, progress=False)
    df = pd.read_csv(res.folder / "results.csv")
    assert {"probe", "baseline", "erasure:leace", "intervention:leace"} <= set(df.method)
    dist = df[df.task == "tree_distance"]
    assert {"uuas", "dspr"} <= set(dist.metric) and dist[dist.metric == "uuas"].value.between(0, 1).all()
    assert (res.folder / "figures" / "tree_distance_by_layer.png").is_file()
    res2 = run_experiment(cfg, progress=False)
    assert res2.forward_passes == 0
    assert set(pd.read_csv(res2.folder / "results.csv").method) == set(df.method)
