"""Saved probes (probekit.bundle): training, the .probe file, predict on raw text, refusals and errors."""
from __future__ import annotations

import zipfile

import numpy as np
import pytest

from probekit.errors import ConfigError, DataError, ModelError, ProbekitError


@pytest.fixture(scope="module")
def tiny_bert(tiny_bert_dir):
    from probekit.activations.models import load_model

    return load_model(str(tiny_bert_dir), device="cpu")


@pytest.fixture(scope="module")
def bundle(tiny_bert, ewt_dev, tmp_path_factory):
    """aux_verb probes on both hidden layers + embeddings of the tiny BERT (40 train / 20 dev sentences)."""
    from probekit.bundle import train_probe_bundle

    return train_probe_bundle(tiny_bert, "aux_verb", train=ewt_dev[:40], dev=ewt_dev[40:60],
                              store_root=tmp_path_factory.mktemp("stores"), device="cpu")


def _prob_cols(df):
    return [c for c in df.columns if c.startswith("p_")]


def test_bundle_metadata(bundle, tiny_bert):
    assert bundle.layers == list(range(tiny_bert.num_layers + 1))
    assert bundle.weights_hash == tiny_bert.weights_hash
    assert bundle.model_kind == "encoder" and bundle.word_pooling == "first"
    assert bundle.labels == ["not_aux", "aux"] and bundle.level == "word"
    assert bundle.extraction["prefix"] and bundle.extraction["suffix"]  # [CLS] ... [SEP]
    assert bundle.extraction["dtype"] == "float16"
    assert bundle.best_layer in bundle.layers
    for layer, f in bundle.fits.items():
        assert f.coef.shape == (tiny_bert.hidden_size, 2)
        assert f.dev_accuracy is not None and 0.0 <= f.dev_accuracy <= 1.0
    assert "aux_verb" in repr(bundle)


def test_predict_frame_shape_and_probabilities(bundle, tiny_bert):
    texts = ["I have eaten .", "The dog can not swim ."]
    df = bundle.predict(texts, model=tiny_bert, tokenize="whitespace")
    n_words = sum(len(t.split()) for t in texts)
    assert len(df) == n_words * len(bundle.layers)
    assert list(df.columns[:6]) == ["sentence", "word_index", "word", "layer", "predicted", "probability"]
    assert _prob_cols(df) == ["p_not_aux", "p_aux"]
    P = df[_prob_cols(df)].to_numpy()
    np.testing.assert_allclose(P.sum(1), 1.0, rtol=1e-5)
    assert (df["probability"].to_numpy() == P.max(1)).all()
    assert (df["predicted"].to_numpy() == np.array(bundle.labels, dtype=object)[P.argmax(1)]).all()
    first = df[(df.sentence == 0) & (df.layer == 0)]
    assert first["word"].tolist() == ["I", "have", "eaten", "."]
    assert first["word_index"].tolist() == [0, 1, 2, 3]


def test_predict_matches_store_features(bundle, tiny_bert, ewt_dev, tmp_path):
    """predict() rebuilds the training features: on the training sentences it gives the labels the
    probe gives on the stored (extracted) vectors."""
    from probekit.activations.extract import extract

    sents = ewt_dev[:40]
    df = bundle.predict(sents, model=tiny_bert)
    store = extract(tiny_bert, sents, split="train", store_root=tmp_path, progress=False)
    for layer in bundle.layers:
        want = bundle.fits[layer].predict_proba(store.layer(layer))
        got = df[df.layer == layer][_prob_cols(df)].to_numpy()
        np.testing.assert_allclose(got, want, atol=2e-3)


def test_spacy_tokenisation_of_raw_strings(bundle, tiny_bert):
    df = bundle.predict(["I don't know.", "  Hello   world  "], model=tiny_bert, layers=0)
    assert df[df.sentence == 0]["word"].tolist() == ["I", "do", "n't", "know", "."]
    assert df[df.sentence == 1]["word"].tolist() == ["Hello", "world"]
    assert set(df["layer"]) == {0}


def test_save_load_round_trip_identical(bundle, tiny_bert, tmp_path):
    from probekit.bundle import load_probe_bundle

    path = bundle.save(tmp_path / "aux.probe")
    assert path.is_file() and not list(tmp_path.glob(".*tmp"))
    loaded = load_probe_bundle(path)
    assert loaded.layers == bundle.layers and loaded.labels == bundle.labels
    assert loaded.weights_hash == bundle.weights_hash and loaded.extraction == bundle.extraction
    assert loaded.best_layer == bundle.best_layer and loaded.info == bundle.info
    for layer in bundle.layers:
        for name in ("coef", "intercept", "mean", "scale"):
            assert np.array_equal(getattr(loaded.fits[layer], name), getattr(bundle.fits[layer], name))
    texts = ["She has been waiting for hours .", "Will you come ?"]
    a = bundle.predict(texts, model=tiny_bert, tokenize="whitespace")
    b = loaded.predict(texts, model=tiny_bert, tokenize="whitespace")
    assert a.equals(b)


def test_load_by_name_when_no_model_given(bundle, tmp_path):
    from probekit.bundle import load_probe_bundle

    loaded = load_probe_bundle(bundle.save(tmp_path / "aux.probe"))
    df = loaded.predict("Can you see it ?", tokenize="whitespace", layers="best", device="cpu")
    assert len(df) == 5 and set(df.layer) == {bundle.best_layer}


def test_refuses_another_model(bundle, tiny_gpt2_dir):
    from probekit.activations.models import load_model

    gpt2 = load_model(str(tiny_gpt2_dir), device="cpu")
    with pytest.raises(ModelError) as e:
        bundle.predict(["I have eaten ."], model=gpt2, tokenize="whitespace")
    msg = str(e.value)
    assert bundle.model_name in msg and str(tiny_gpt2_dir) in msg
    assert bundle.weights_hash[:16] in msg and gpt2.weights_hash[:16] in msg


def test_refuses_same_architecture_other_weights(bundle, tiny_bert_dir):
    """Same name and tokenizer but re-initialised weights (NAME@random) is another feature space."""
    from probekit.activations.models import load_model

    rnd = load_model(f"{tiny_bert_dir}@random", device="cpu")
    with pytest.raises(ModelError, match="weights"):
        bundle.predict(["I have eaten ."], model=rnd, tokenize="whitespace")


def test_refuses_same_weights_other_config_or_tokenizer(bundle, tiny_bert_dir, tmp_path):
    import json
    import shutil

    from probekit.activations.models import load_model
    from probekit.bundle import load_probe_bundle

    assert bundle.files_hash
    folder = tmp_path / "edited"
    shutil.copytree(tiny_bert_dir, folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["hidden_act"] = "relu"
    (folder / "config.json").write_text(json.dumps(cfg))
    edited = load_model(str(folder), device="cpu")
    assert edited.weights_hash == bundle.weights_hash
    with pytest.raises(ModelError, match="other config or tokenizer files"):
        bundle.predict(["I have eaten ."], model=edited, tokenize="whitespace")
    bundle.save(tmp_path / "b.probe")
    assert load_probe_bundle(tmp_path / "b.probe").files_hash == bundle.files_hash


def test_layer_selection(bundle, tiny_bert):
    df = bundle.predict(["a b"], model=tiny_bert, tokenize="whitespace", layers=[-1, 0])
    assert df["layer"].tolist() == [bundle.layers[-1], 0, bundle.layers[-1], 0]
    with pytest.raises(ConfigError, match="no probe"):
        bundle.predict(["a b"], model=tiny_bert, layers=[7])
    with pytest.raises(ConfigError):
        bundle.predict(["a b"], model=tiny_bert, layers="worst")


def test_bad_inputs(bundle, tiny_bert):
    with pytest.raises(DataError, match="empty"):
        bundle.predict(["fine", "   "], model=tiny_bert, tokenize="whitespace")
    with pytest.raises(DataError):
        bundle.predict([], model=tiny_bert)
    with pytest.raises(ConfigError, match="tokenize mode"):
        bundle.predict(["a"], model=tiny_bert, tokenize="spaces")


def test_file_errors(bundle, tmp_path):
    from probekit.bundle import load_probe_bundle

    with pytest.raises(DataError, match="not found"):
        load_probe_bundle(tmp_path / "missing.probe")
    foreign = tmp_path / "notes.probe"
    foreign.write_text("hello, I am not a probe\n")
    with pytest.raises(DataError, match="not a probekit probe file"):
        load_probe_bundle(foreign)
    other_npz = tmp_path / "other.npz"
    np.savez(other_npz, x=np.zeros(3))
    with pytest.raises(DataError, match="not a probekit probe file"):
        load_probe_bundle(other_npz)
    good = bundle.save(tmp_path / "good.probe")
    raw = good.read_bytes()
    truncated = tmp_path / "truncated.probe"
    truncated.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError):
        load_probe_bundle(truncated)
    # change bytes inside a stored array (compressed data): CRC / checksum must catch it
    with zipfile.ZipFile(good) as z:
        info = z.getinfo("L1.coef.npy")
    flipped = bytearray(raw)
    pos = info.header_offset + 30 + len(info.filename) + len(info.extra) + info.compress_size // 2
    flipped[pos] ^= 0xFF
    bad = tmp_path / "flipped.probe"
    bad.write_bytes(bytes(flipped))
    with pytest.raises(DataError, match="damaged"):
        load_probe_bundle(bad)


def test_checksum_catches_rewritten_arrays(bundle, tmp_path):
    """A well-formed archive whose arrays were replaced (valid zip, valid CRCs) is still refused."""
    import io
    import json

    from probekit.bundle import load_probe_bundle

    good = bundle.save(tmp_path / "good.probe")
    with np.load(good) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["L0.intercept"] = arrays["L0.intercept"] + 1.0
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    bad = tmp_path / "edited.probe"
    bad.write_bytes(buf.getvalue())
    with pytest.raises(DataError, match="checksum"):
        load_probe_bundle(bad)
    meta = json.loads(arrays["__meta__"].tobytes())
    meta["format_version"] = 99
    arrays["L0.intercept"] -= 1.0
    arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    newer = tmp_path / "newer.probe"
    newer.write_bytes(buf.getvalue())
    with pytest.raises(DataError, match="newer probekit"):
        load_probe_bundle(newer)


def test_training_errors(tiny_bert, ewt_dev, tmp_path):
    from probekit.bundle import train_probe_bundle
    from probekit.errors import TaskError

    with pytest.raises(ConfigError, match="out of range"):
        train_probe_bundle(tiny_bert, "aux_verb", train=ewt_dev[:5], layers=[9], store_root=tmp_path)
    one_label = [s for s in ewt_dev[:200] if "AUX" not in s.upos][:5]
    with pytest.raises(TaskError, match="single label"):
        train_probe_bundle(tiny_bert, "aux_verb", train=one_label, store_root=tmp_path)
    with pytest.raises(ProbekitError):
        train_probe_bundle(tiny_bert, "no_such_task", train=ewt_dev[:5], store_root=tmp_path)


def test_sentence_task_on_decoder(tiny_gpt2_dir, ewt_dev, tmp_path):
    """Sentence-level bundles use a sentence pooling; decoders have mean/last but no cls."""
    from probekit.activations.models import load_model
    from probekit.bundle import load_probe_bundle, train_probe_bundle

    gpt2 = load_model(str(tiny_gpt2_dir), device="cpu")
    with pytest.raises(ConfigError, match="cls"):
        train_probe_bundle(gpt2, "sentence_length", train=ewt_dev[:30], sentence_pooling="cls",
                           store_root=tmp_path)
    b = train_probe_bundle(gpt2, "sentence_length", train=ewt_dev[:30], sentence_pooling="last",
                           layers=[0, 2], store_root=tmp_path)
    assert b.model_kind == "decoder" and b.word_pooling == "last" and b.extraction["prepend_bos"] is True
    loaded = load_probe_bundle(b.save(tmp_path / "len.probe"))
    df = loaded.predict(["One two three .", "A much longer sentence with quite a few more words in it ."],
                        model=gpt2, tokenize="whitespace")
    assert list(df.columns[:5]) == ["sentence", "text", "layer", "predicted", "probability"]
    assert len(df) == 2 * 2 and df["layer"].tolist() == [0, 2, 0, 2]
    assert len(_prob_cols(df)) == 6


@pytest.mark.slow
def test_minilm_aux_probe_labels_have(data_dir, tmp_path):
    """Real MiniLM, 1500 EWT train sentences: 'have' is aux in 'I have eaten.' and not in 'I have a dog.'

    Two candidate layers and one C keep it short (45 s measured on the 2-core CPU, dominated by
    the forward passes over ~45k subwords); the best of the two on dev is used.
    """
    from probekit.bundle import load_probe_bundle, train_probe_bundle
    from probekit.data.datasets import load_split

    train = load_split("ud_ewt", "train", data_dir=data_dir, limit=1500)
    dev = load_split("ud_ewt", "dev", data_dir=data_dir, limit=200)
    bundle = train_probe_bundle("minilm", "aux_verb", train=train, dev=dev, layers=[2, 4], Cs=(0.1,),
                                store_root=tmp_path, device="cpu")
    assert all(f.dev_accuracy > 0.95 for f in bundle.fits.values()), bundle.dev_accuracy()
    loaded = load_probe_bundle(bundle.save(tmp_path / "minilm-aux.probe"))
    df = loaded.predict(["I have eaten.", "I have a dog."], layers="best", device="cpu")
    have = df[df.word == "have"].set_index("sentence")
    assert have.loc[0, "predicted"] == "aux", have
    assert have.loc[1, "predicted"] == "not_aux", have
