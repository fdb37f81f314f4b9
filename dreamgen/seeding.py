"""Explicit, derived randomness: every env seed and generator comes from ``(run seed, stage, index)``.

Collection/generation env seeds live in ``[0, EVAL_SEED_BASE)`` and evaluation seeds in
``[EVAL_SEED_BASE, 2 * EVAL_SEED_BASE)``, so evaluation layouts are disjoint from training ones by
construction (and ``evaluate`` checks it against the training store as well).
"""

from __future__ import annotations

import zlib

import numpy as np

EVAL_SEED_BASE = 2**30


def derive_seed(run_seed: int, stage: str, *index: int) -> int:
    """A seed in ``[0, EVAL_SEED_BASE)`` that depends only on the run seed, the stage and the indices."""
    entropy = [int(run_seed), zlib.crc32(stage.encode()), *map(int, index)]
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint32)[0]) % EVAL_SEED_BASE


def eval_seed(run_seed: int, *index: int) -> int:
    """An evaluation env seed, disjoint from every ``derive_seed`` value."""
    return EVAL_SEED_BASE + derive_seed(run_seed, "evaluate", *index)


def make_rng(run_seed: int, stage: str, *index: int) -> np.random.Generator:
    return np.random.default_rng(derive_seed(run_seed, stage, *index))
