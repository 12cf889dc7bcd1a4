"""Seeded samples of sentences: the one way probekit draws a subset of a split.

``train_sentences`` is drawn here both by the experiment (one fixed sample, seed
:data:`probekit.runner.experiment.TRAIN_SAMPLE_SEED`, shared by every probe and recorded in the data fingerprint) and
by the tuning baselines (a sample per run, seeded by the run's seed: :func:`probekit.baselines.train.subsample`).
The two callers pass different seeds; the drawing rule is this function's alone.
"""
from __future__ import annotations

from typing import Sequence, TypeVar

import numpy as np

T = TypeVar("T")


def sample_sentences(sentences: Sequence[T], n: int | None, seed: int | Sequence[int]) -> list[T]:
    """``n`` of ``sentences`` drawn without replacement by ``numpy.random.default_rng(seed)``, kept in corpus order;
    all of them (a copy) when ``n`` is None or not below their number.

    The same arguments give the same sample on every machine (numpy's PCG64 stream), so the sample can enter keys.
    """
    if n is None or n >= len(sentences):
        return list(sentences)
    keep = np.sort(np.random.default_rng(seed).choice(len(sentences), size=n, replace=False))
    return [sentences[i] for i in keep]
