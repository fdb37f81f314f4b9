"""CappedMixSampler: training batches of real and accepted-dream samples with a hard cap on the dream share.

Every batch holds at most ``floor(max_dream_fraction × batch_size)`` dream samples — and, for a short
last batch, at most ``floor(max_dream_fraction × its size)`` — whatever the seed or pool sizes. When the
dream pool is smaller than the cap (or empty), the shortfall is filled from real data. One epoch is one
pass over the real samples (each exactly once); dream samples are drawn without replacement, reshuffled
whenever the pool runs out. ``achieved_fraction`` reports the dream share actually delivered.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from dreamgen.errors import ConfigError


def check_fraction(max_dream_fraction: float, field: str = "max_dream_fraction") -> float:
    """``max_dream_fraction`` as a float in [0, 1), or a ``ConfigError`` naming ``field``."""
    try:
        value = float(max_dream_fraction)
    except (TypeError, ValueError):
        raise ConfigError(f"{field}={max_dream_fraction!r}; must be a number in [0, 1)") from None
    if not 0.0 <= value < 1.0:  # also refuses nan
        raise ConfigError(f"{field}={max_dream_fraction!r}; must be in [0, 1) (0 = real only; a batch always "
                          "keeps some real data)")
    return value


class CappedMixSampler:
    """Index batches ``(real[k], dream[j])`` over pools of ``n_real`` real and ``n_dream`` dream samples."""

    def __init__(self, n_real: int, n_dream: int, batch_size: int, max_dream_fraction: float, *, seed: int):
        self.max_dream_fraction = check_fraction(max_dream_fraction)
        if int(batch_size) < 1:
            raise ConfigError(f"batch_size={batch_size}; must be >= 1")
        if int(n_real) < 1:
            raise ConfigError("the real pool is empty; capped mixing needs real samples to fill every batch")
        if int(n_dream) < 0:
            raise ConfigError(f"n_dream={n_dream}; must be >= 0")
        self.n_real, self.n_dream, self.batch_size = int(n_real), int(n_dream), int(batch_size)
        self.cap = math.floor(self.max_dream_fraction * self.batch_size)
        self.rng = np.random.default_rng(seed)
        self._dream_order = np.zeros(0, np.int64)
        self.real_delivered = 0
        self.dream_delivered = 0

    def dream_count(self, size: int) -> int:
        """Dream samples in a batch of ``size``: the cap for that size, limited by the pool."""
        cap = self.cap if size == self.batch_size else math.floor(self.max_dream_fraction * size)
        return min(cap, self.n_dream)

    def _take_dream(self, count: int) -> np.ndarray:
        out: list[np.ndarray] = []
        while count > 0:
            if not len(self._dream_order):  # reshuffle; samples already in this batch go last (no repeats)
                fresh = self.rng.permutation(self.n_dream)
                used = np.isin(fresh, np.concatenate(out)) if out else np.zeros(self.n_dream, bool)
                self._dream_order = np.concatenate([fresh[~used], fresh[used]])
            take = self._dream_order[:count]
            self._dream_order = self._dream_order[count:]
            out.append(take)
            count -= len(take)
        return np.concatenate(out) if out else np.zeros(0, np.int64)

    def epoch(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """One pass over the real pool: batches of ``batch_size`` (the last may be shorter)."""
        order = self.rng.permutation(self.n_real)
        k = self.dream_count(self.batch_size)
        real_per_batch = self.batch_size - k
        start = 0
        while start < self.n_real:
            left = self.n_real - start
            if left >= real_per_batch:
                real, dream = order[start:start + real_per_batch], self._take_dream(k)
            else:  # a short last batch: its dream share is capped at its own size
                size = left
                while size < self.batch_size and size + 1 - left <= self.dream_count(size + 1):  # grow while the cap allows
                    size += 1
                real, dream = order[start:], self._take_dream(size - left)
            start += len(real)
            self.real_delivered += len(real)
            self.dream_delivered += len(dream)
            yield real, dream

    @property
    def achieved_fraction(self) -> float:
        """Dream share of every sample delivered so far (0 before the first batch)."""
        total = self.real_delivered + self.dream_delivered
        return self.dream_delivered / total if total else 0.0
