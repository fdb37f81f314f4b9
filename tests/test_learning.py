"""Slow learning test: BC on real scripted demos reaches real-simulator success on easy tasks."""

from __future__ import annotations

import numpy as np
import pytest

from dreamgen.data.collect import CollectSpec, collect_real
from dreamgen.evaluate import evaluate_task
from dreamgen.language import default_encoder
from dreamgen.sim.metaworld import METAWORLD
from policies.bc import BCConfig, fit_bc

pytestmark = pytest.mark.slow


def test_bc_on_real_demos_beats_a_random_policy():
    tasks = ("drawer-open-v3", "button-press-topdown-v3")
    spec = CollectSpec(embodiment=METAWORLD, tasks=tasks, n_expert=10, n_play=0, expert_noise=0.1, play_noise=0.6,
                       play_random_prob=0.3, play_steps=150, post_success_steps=10, max_steps=500)
    episodes = [e for e in collect_real(spec, run_seed=0) if e.success.any()]
    seeds = {e.meta["seed"] for e in episodes}
    encoder = default_encoder()
    obs = np.concatenate([e.obs for e in episodes])
    action = np.concatenate([e.action for e in episodes])
    cond = encoder.encode([e.meta["instruction"] for e in episodes for _ in range(len(e))])
    config = BCConfig(hidden=256, layers=3, lr=1e-3, weight_decay=1e-4, epochs=100, batch_size=256,
                      action_noise_std=0.1)
    policy = fit_bc(obs, action, cond, config, seed=0)
    rng = np.random.default_rng(0)
    for index, task in enumerate(tasks):
        kwargs = dict(embodiment=METAWORLD, n_episodes=20, max_steps=300, run_seed=0, embed=encoder.encode,
                      instructions="sampled", exclude_seeds=seeds)
        trained = evaluate_task(lambda o, c, _, __: policy.act(o, c), task, index, **kwargs)
        random = evaluate_task(lambda o, c, _, __: rng.uniform(-1, 1, (len(o), 4)).astype(np.float32),
                               task, index, **kwargs)
        assert trained.successes >= 10, (task, trained)
        assert trained.successes > random.successes + 5, (task, trained, random)
