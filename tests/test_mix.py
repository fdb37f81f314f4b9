"""CappedMixSampler: the dream cap holds exactly, for every batch, seed and edge case (property tests)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dreamgen.errors import ConfigError
from dreamgen.mix import CappedMixSampler, check_fraction

fractions = st.floats(min_value=0.0, max_value=0.999, allow_nan=False)


@settings(max_examples=300, deadline=None)
@given(n_real=st.integers(1, 400), n_dream=st.integers(0, 1500), batch=st.integers(1, 128), fraction=fractions,
       seed=st.integers(0, 2**32 - 1), epochs=st.integers(1, 3))
def test_every_batch_respects_the_cap_and_real_data_is_covered(n_real, n_dream, batch, fraction, seed, epochs):
    sampler = CappedMixSampler(n_real, n_dream, batch, fraction, seed=seed)
    cap = math.floor(fraction * batch)
    real_total = dream_total = 0
    for _ in range(epochs):
        seen = []
        batches = list(sampler.epoch())
        for i, (real, dream) in enumerate(batches):
            size = len(real) + len(dream)
            assert 1 <= size <= batch
            assert len(dream) <= cap and len(dream) <= math.floor(fraction * size)
            assert len(dream) <= n_dream
            if i < len(batches) - 1:
                assert size == batch  # only the last batch of an epoch may be short
                assert len(dream) == min(cap, n_dream)  # the shortfall is filled from real data, never left empty
            assert ((real >= 0) & (real < n_real)).all() and ((dream >= 0) & (dream < max(n_dream, 1))).all()
            assert len(set(dream.tolist())) == len(dream)  # no dream repeats within a batch
            seen += real.tolist()
            real_total += len(real)
            dream_total += len(dream)
        assert sorted(seen) == list(range(n_real))  # one epoch = every real sample exactly once
    assert sampler.achieved_fraction == pytest.approx(dream_total / (real_total + dream_total))
    assert sampler.achieved_fraction <= fraction + 1e-12


@settings(max_examples=50, deadline=None)
@given(n_real=st.integers(1, 200), batch=st.integers(1, 64), seed=st.integers(0, 1000))
def test_cap_zero_and_empty_pool_are_real_only(n_real, batch, seed):
    for n_dream, fraction in ((500, 0.0), (0, 0.75)):
        sampler = CappedMixSampler(n_real, n_dream, batch, fraction, seed=seed)
        assert all(len(dream) == 0 for _, dream in sampler.epoch())
        assert sampler.achieved_fraction == 0.0


def test_dream_pool_is_drawn_without_replacement_until_exhausted():
    sampler = CappedMixSampler(n_real=90, n_dream=30, batch_size=10, max_dream_fraction=0.5, seed=0)
    dreams = np.concatenate([d for _, d in sampler.epoch()])
    assert len(dreams) == 90 and np.bincount(dreams, minlength=30).tolist() == [3] * 30
    assert sampler.achieved_fraction == 0.5
    again = CappedMixSampler(n_real=90, n_dream=30, batch_size=10, max_dream_fraction=0.5, seed=0)
    assert all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
               for a, b in zip(again.epoch(), CappedMixSampler(90, 30, 10, 0.5, seed=0).epoch(), strict=True))


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, float("nan"), "half", None])
def test_fraction_outside_zero_one_is_refused(bad):
    with pytest.raises(ConfigError, match=r"mix.max_dream_fraction=.*\[0, 1\)"):
        check_fraction(bad, "mix.max_dream_fraction")
    with pytest.raises(ConfigError):
        CappedMixSampler(10, 10, 4, bad, seed=0)


def test_empty_real_pool_or_bad_batch_is_refused():
    with pytest.raises(ConfigError, match="real pool is empty"):
        CappedMixSampler(0, 10, 4, 0.5, seed=0)
    with pytest.raises(ConfigError, match="batch_size"):
        CappedMixSampler(10, 10, 0, 0.5, seed=0)
