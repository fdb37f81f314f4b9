"""Evaluation maths and seed disjointness."""

from __future__ import annotations

import pytest

from dreamgen.errors import ConfigError
from dreamgen.evaluate import evaluation_seeds, wilson_interval
from dreamgen.seeding import EVAL_SEED_BASE, derive_seed


def test_wilson_interval_known_values():
    low, high = wilson_interval(8, 10)
    assert abs(low - 0.4902) < 1e-3 and abs(high - 0.9433) < 1e-3
    assert wilson_interval(0, 50)[0] == 0.0 and 0.06 < wilson_interval(0, 50)[1] < 0.08
    assert wilson_interval(50, 50)[1] == 1.0
    assert wilson_interval(0, 0) == (0.0, 1.0)
    for k in range(21):
        low, high = wilson_interval(k, 20)
        assert low <= k / 20 <= high


def test_seed_ranges_are_disjoint_and_derived():
    assert derive_seed(0, "collect", 1, 2) == derive_seed(0, "collect", 1, 2)
    assert derive_seed(0, "collect", 1, 2) != derive_seed(1, "collect", 1, 2)
    train = {derive_seed(s, "collect/expert/layout", t, i) for s in range(3) for t in range(5) for i in range(50)}
    assert max(train) < EVAL_SEED_BASE
    evals = set(evaluation_seeds(0, 0, 50))
    assert min(evals) >= EVAL_SEED_BASE and not evals & train
    with pytest.raises(ConfigError, match="also appear in the training data"):
        evaluation_seeds(0, 0, 5, exclude=evals)
