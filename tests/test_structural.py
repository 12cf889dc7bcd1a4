"""Structural probes: gold relations from UD HEAD, metrics against hand-built answers, batched training."""
from __future__ import annotations

import numpy as np
import pytest

from probekit.data.conllu_io import Sentence
from probekit.errors import ConfigError, DataError
from probekit.probing.control import control_parents
from probekit.probing.structural import (
    StructuralSettings,
    depth_metrics,
    depth_records,
    distance_metrics,
    distance_records,
    fit_score_layers,
    fit_structural,
    layer_records,
    layer_scales,
    linear_distances,
    mst_edges,
    predict_structural,
    split_targets,
)
from probekit.tasks.relations import tree_depths, tree_distances


def sent(heads, upos=None, words=None, has_syntax=True, sid="s1"):
    n = len(heads)
    words = words or [f"w{i}" for i in range(n)]
    return Sentence(sent_id=sid, text=" ".join(words), words=words, lemmas=list(words),
                    upos=upos or ["NOUN"] * n, xpos=["NN"] * n, feats=[{} for _ in range(n)], heads=list(heads),
                    deprels=["dep"] * n, space_after=[True] * (n - 1) + [False], has_syntax=has_syntax)


def random_sentence(rng, n, sid):
    """A random tree (each word's parent drawn among the words before it, then the order shuffled)."""
    perm = rng.permutation(n)  # perm[k] = position of the k-th created node
    heads = [0] * n
    for k in range(1, n):
        heads[perm[k]] = int(perm[rng.integers(0, k)]) + 1
    return sent(heads, sid=sid)


def tree_vectors(sentences, d, rng):
    """Word vectors whose squared distances are the tree distances and squared norms the depths, under a known
    linear map: each word is the indicator of the edges on its path to the root (shared dimensions across
    sentences), then mixed by a random invertible matrix A; the probe B = A^-1 recovers them exactly."""
    X = []
    for s in sentences:
        parent = np.asarray(s.heads) - 1
        for i in range(len(s)):
            v, j = np.zeros(d), i
            while parent[j] >= 0:
                v[j] = 1.0  # edge (j, parent j) is named by its child j
                j = parent[j]
            X.append(v)
    A = np.linalg.qr(rng.normal(size=(d, d)))[0]  # a random rotation
    return np.asarray(X) @ A.T, A  # rows h = A v; B = A so that h @ B = v


def test_tree_distances_and_depths():
    # the cat sat on the mat: "sat" (3) is the root
    s = sent([2, 3, 0, 6, 6, 3])
    D = tree_distances(s)
    assert D[2].tolist() == [2, 1, 0, 2, 2, 1] and (D == D.T).all()
    assert tree_depths(s).tolist() == [2, 1, 0, 2, 2, 1]


@pytest.mark.parametrize("heads,msg", [([0, 0, 2], "2 words with HEAD 0"), ([2, 3, 1], "0 words with HEAD 0"),
                                       ([0, 3, 2], "cycle"), ([0, 7, 1], "outside 0..3")])
def test_heads_that_are_not_a_tree(heads, msg):
    with pytest.raises(DataError, match=msg):
        tree_distances(sent(heads))


def test_treebank_without_head():
    with pytest.raises(DataError, match="no dependency tree"):
        split_targets([sent([0, 1], has_syntax=False)], "distance")


def test_rank_larger_than_hidden_size():
    rng = np.random.default_rng(0)
    sents = [random_sentence(rng, 5, f"s{i}") for i in range(3)]
    data = split_targets(sents, "distance")
    X = rng.normal(size=(1, 15, 8)).astype(np.float32)
    with pytest.raises(ConfigError, match="rank 9 must be an integer in 1..8"):
        fit_structural(X, data, X, data, kind="distance", settings=StructuralSettings(rank=9, epochs=1))


def test_mst_ties_and_punctuation():
    # a chain 0-1-2 with word 1 punctuation: the MST over {0, 2} is the single edge (0, 2)
    D = np.array([[0, 1, 2], [1, 0, 1], [2, 1, 0]], dtype=float)
    assert mst_edges(D, np.array([True, False, True])) == {(0, 2)}
    assert mst_edges(D, np.ones(3, bool)) == {(0, 1), (1, 2)}


def test_known_probe_recovers_the_trees_exactly():
    rng = np.random.default_rng(0)
    sents = [random_sentence(rng, int(n), f"s{i}") for i, n in enumerate(rng.integers(5, 20, size=30))]
    X, B = tree_vectors(sents, 20, rng)
    for kind, (records, metrics, want) in {"distance": (distance_records, distance_metrics, ("uuas", "dspr")),
                                          "depth": (depth_records, depth_metrics, ("root_acc", "nspr"))}.items():
        data = split_targets(sents, kind)
        preds = predict_structural(X[None].astype(np.float32), data, B[None].astype(np.float32), kind=kind,
                                   device="cpu")
        # float32 rounding (~1e-5) would break the gold's ties at random in the ranks: round to the answer's grid
        preds = [np.round(p, 3) for p in preds]
        m = metrics(layer_records(records(preds, data), 0))
        assert m[want[0]] == 1.0 and m[want[1]] == pytest.approx(1.0, abs=1e-6), (kind, m)
        # and a wrong probe (random B) does not
        wrong = predict_structural(X[None].astype(np.float32), data, rng.normal(size=(1, 20, 20)).astype(np.float32),
                                   kind=kind, device="cpu")
        assert metrics(layer_records(records(wrong, data), 0))[want[1]] < 0.9


def test_right_branching_baseline_is_a_chain():
    s = sent([2, 3, 0, 3])  # 0<-1<-2->3: the chain 0-1-2-3 finds every edge
    data = split_targets([s], "distance")
    rec = distance_records(linear_distances(data), data)
    assert distance_metrics(layer_records(rec, 0))["uuas"] == 1.0
    s = sent([3, 3, 0, 3])  # 0->2, 1->2, 3->2: the chain finds (1,2), (2,3), not (0,2)
    data = split_targets([s], "distance")
    rec = distance_records(linear_distances(data), data)
    assert distance_metrics(layer_records(rec, 0))["uuas"] == pytest.approx(2 / 3)


def test_control_structure_is_a_tree_decided_by_word_type():
    words = ["the", "dog", "saw", "the", "cat", "and", "the", "bird"]
    parent = control_parents(words, seed=0)
    assert parent[0] == -1 and parent[-1] == 0
    assert parent[3] - 3 == parent[6] - 6 or (parent[3] == parent[6])  # same type "the", same behaviour
    tree_distances(sent((parent + 1).tolist(), words=words))  # a tree: no error


@pytest.mark.parametrize("kind", ["distance", "depth"])
def test_batched_training_learns_the_tree_vectors(kind):
    """Two layers trained at once: the tree vectors (layer 0) and noise (layer 1)."""
    rng = np.random.default_rng(1)
    sents = [random_sentence(rng, int(n), f"s{i}") for i, n in enumerate(rng.integers(5, 15, size=120))]
    X, _ = tree_vectors(sents, 16, rng)
    X = X / np.abs(X).max()
    Xs = np.stack([X, rng.normal(size=X.shape)]).astype(np.float32)
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in sents])])
    parts = {"train": slice(0, 80), "dev": slice(80, 100), "test": slice(100, 120)}
    Xd = {r: Xs[:, offsets[p.start]:offsets[p.stop]] for r, p in parts.items()}
    data = {r: split_targets(sents[p], kind) for r, p in parts.items()}
    scores = fit_score_layers(Xd, data, [0, 1], kind=kind, settings=StructuralSettings(batch_size=4, device="cpu"))
    main = "uuas" if kind == "distance" else "root_acc"
    assert scores[0].metrics[main] >= 0.95, scores[0].metrics
    assert scores[1].metrics[main] < 0.6, scores[1].metrics
    assert scores[0].per_sentence["length"].shape == (20,)


def test_rescale_makes_training_blind_to_the_vectors_scale():
    """With ``rescale`` the probe learns the tree from vectors 1000x too large as from vectors 1000x too small (the
    same inputs after dividing by each layer's RMS spread); without it the reference's init and lr see a different
    problem at each scale."""
    rng = np.random.default_rng(2)
    sents = [random_sentence(rng, int(n), f"s{i}") for i, n in enumerate(rng.integers(5, 12, size=100))]
    X, _ = tree_vectors(sents, 12, rng)
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in sents])])
    parts = {"train": slice(0, 80), "dev": slice(80, 90), "test": slice(90, 100)}
    data = {r: split_targets(sents[p], "distance") for r, p in parts.items()}
    st = StructuralSettings(batch_size=4, device="cpu", rescale=True)
    got = []
    for c in (1e3, 1e-3):
        Xd = {r: (c * X[None, offsets[p.start]:offsets[p.stop]]).astype(np.float32) for r, p in parts.items()}
        spread = np.sqrt(((Xd["train"][0] - Xd["train"][0].mean(0)) ** 2).sum(1).mean())
        assert layer_scales(Xd["train"]) == pytest.approx([spread], rel=1e-5)
        got.append(fit_score_layers(Xd, data, [0], kind="distance", settings=st)[0].metrics)
    assert got[0]["uuas"] == got[1]["uuas"] >= 0.95 and got[0]["dspr"] == pytest.approx(got[1]["dspr"], abs=1e-3)
    assert layer_scales(np.zeros((2, 3, 4))).tolist() == [1.0, 1.0]
