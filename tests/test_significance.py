"""Sentence-level bootstrap and paired tests checked against scipy on a synthetic probe with known scores."""
import numpy as np
import pytest
from scipy import stats as sps

from probekit.errors import ConfigError, DataError
from probekit.results.significance import (
    bootstrap_interval,
    holm,
    paired_test,
    resample_weights,
    score,
    sentence_counts,
)


def _synthetic(n_sent=60, seed=0, p_a=0.8, p_b=0.7):
    """A test set of n_sent sentences of 3-12 words, gold labels 0/1, and two probes right with p_a / p_b."""
    rng = np.random.default_rng(seed)
    lens = rng.integers(3, 13, n_sent)
    sent = np.repeat(np.arange(n_sent), lens)
    gold = rng.integers(0, 2, sent.size)
    a = np.where(rng.random(sent.size) < p_a, gold, 1 - gold)
    b = np.where(rng.random(sent.size) < p_b, gold, 1 - gold)
    return sent, gold, a, b


@pytest.mark.parametrize("metric", ["accuracy", "pos_f1", "macro_f1"])
def test_point_scores_match_sklearn(metric):
    from sklearn.metrics import f1_score
    sent, gold, a, _ = _synthetic()
    c = sentence_counts(metric, gold, a, sent, sent.max() + 1, 2)
    want = {"accuracy": (gold == a).mean(), "pos_f1": f1_score(gold, a),
            "macro_f1": f1_score(gold, a, average="macro")}[metric]
    assert score(metric, c.sum(0)) == pytest.approx(want, abs=1e-12)


def test_bootstrap_interval_matches_scipy_percentile():
    sent, gold, a, _ = _synthetic(n_sent=80)
    S = sent.max() + 1
    c = sentence_counts("accuracy", gold, a, sent, S, 2)
    point, lo, hi = bootstrap_interval("accuracy", c, resample_weights(S, 20000, seed=1))

    def ratio(i, axis=-1):  # resampled sentence indices -> accuracy of the words in them
        i = i.astype(int)
        return c[i, 0].sum(axis) / c[i, 1].sum(axis)
    ref = sps.bootstrap((np.arange(S),), ratio, n_resamples=20000, method="percentile", vectorized=True,
                        random_state=np.random.default_rng(2)).confidence_interval
    assert point == pytest.approx((gold == a).mean())
    width = ref.high - ref.low
    assert width > 0.05  # a real interval, so the tolerance below is a fraction of it
    assert lo == pytest.approx(ref.low, abs=0.04 * width)
    assert hi == pytest.approx(ref.high, abs=0.04 * width)


def test_bootstrap_is_clustered_by_sentence():
    """Sentences all right or all wrong: the clustered interval is wider than a word-level one would be."""
    rng = np.random.default_rng(0)
    lens = rng.integers(5, 15, 100)
    sent = np.repeat(np.arange(100), lens)
    gold = np.zeros(sent.size, int)
    pred = np.where(rng.random(100)[sent] < 0.8, 0, 1)
    c = sentence_counts("accuracy", gold, pred, sent, 100, 2)
    _, lo, hi = bootstrap_interval("accuracy", c, resample_weights(100, 2000, 0))
    p = (gold == pred).mean()
    word_half = 1.96 * np.sqrt(p * (1 - p) / sent.size)
    assert (hi - lo) / 2 > 2 * word_half


@pytest.mark.parametrize("metric,p_b", [("accuracy", 0.7), ("accuracy", 0.79), ("pos_f1", 0.72)])
def test_paired_test_matches_scipy_permutation_test(metric, p_b):
    sent, gold, a, b = _synthetic(n_sent=50, p_b=p_b)
    S = sent.max() + 1
    ca, cb = (sentence_counts(metric, gold, x, sent, S, 2) for x in (a, b))
    got = paired_test(metric, ca, cb, n_resamples=20000, seed=3)

    def stat(x, y, axis=-1):  # x, y: per-sentence row indices of A's and B's counts
        return score(metric, _rows(ca, cb, x).sum(-2)) - score(metric, _rows(ca, cb, y).sum(-2))
    # scipy swaps x[i] and y[i] per sentence; encode "A's counts of sentence i" as i and "B's" as S + i
    ref = sps.permutation_test((np.arange(S), np.arange(S) + S), stat, permutation_type="samples",
                               vectorized=True, n_resamples=20000, random_state=np.random.default_rng(4))
    assert got["diff"] == pytest.approx(ref.statistic, abs=1e-12)
    assert got["p"] == pytest.approx(ref.pvalue, abs=0.015 + 0.05 * ref.pvalue)
    assert got["lo"] <= got["diff"] <= got["hi"]


def _rows(ca, cb, idx):
    both = np.concatenate([ca, cb])
    return both[np.asarray(idx).astype(int)]


def test_paired_test_of_identical_systems_is_not_significant():
    sent, gold, a, _ = _synthetic()
    c = sentence_counts("accuracy", gold, a, sent, sent.max() + 1, 2)
    r = paired_test("accuracy", c, c, n_resamples=500)
    assert r["diff"] == 0 and r["p"] == 1.0


def test_holm_against_hand_computation():
    p = [0.01, 0.04, 0.03, 0.005]
    # sorted: 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> running max 0.02, 0.03, 0.06, 0.06
    assert holm(p).tolist() == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.9, 0.8]).tolist() == pytest.approx([1.0, 1.0])


def test_bad_input_is_a_clear_error():
    with pytest.raises(ConfigError, match="at least 100"):
        resample_weights(10, 99)
    with pytest.raises(DataError, match="no test words"):
        resample_weights(0, 1000)
    with pytest.raises(DataError, match="same test sentences"):
        paired_test("accuracy", np.ones((3, 2)), np.ones((4, 2)))
