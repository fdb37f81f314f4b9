"""BC policy: learns a known mapping, is deterministic per seed, round-trips through safetensors+JSON."""

from __future__ import annotations

import numpy as np

from policies import load_policy
from policies.base import Policy
from policies.bc import BCConfig, fit_bc

CONFIG = BCConfig(hidden=64, layers=2, lr=3e-3, weight_decay=0.0, epochs=60, batch_size=64,
                  action_noise_std=0.1)


def _data(seed=0):
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(512, 39)).astype(np.float32) * 3 + 1
    cond = np.zeros((512, 8), dtype=np.float32)
    cond[:256, 0] = 1
    cond[256:, 1] = 1
    # the instruction flips the sign of the action: the policy must use the condition
    sign = np.where(cond[:, :1] > 0, 1.0, -1.0)
    action = np.tanh(0.5 * obs[:, :4]) * sign
    return obs, action.astype(np.float32), cond


def test_bc_learns_a_conditioned_mapping():
    obs, action, cond = _data()
    losses = []
    policy = fit_bc(obs, action, cond, CONFIG, seed=0, on_epoch=lambda e, loss: losses.append(loss))
    assert isinstance(policy, Policy)
    assert losses[-1] < 0.1 * losses[0]
    pred = policy.act(obs, cond)
    assert np.mean((pred - action) ** 2) < 0.02
    assert pred.shape == (512, 4) and np.all(np.abs(pred) <= 1)


def test_bc_is_deterministic_and_round_trips(tmp_path):
    obs, action, cond = _data()
    a = fit_bc(obs, action, cond, CONFIG, seed=3, info={"store_digest": "abc"})
    b = fit_bc(obs, action, cond, CONFIG, seed=3)
    np.testing.assert_array_equal(a.act(obs, cond), b.act(obs, cond))
    c = fit_bc(obs, action, cond, CONFIG, seed=4)
    assert not np.array_equal(a.act(obs, cond), c.act(obs, cond))
    a.save(tmp_path / "p")
    assert not list((tmp_path / "p").glob("*.pt")) and not list((tmp_path / "p").glob("*.pkl"))
    loaded = load_policy(tmp_path / "p")
    np.testing.assert_array_equal(loaded.act(obs, cond), a.act(obs, cond))
    assert loaded.info["store_digest"] == "abc"
    noisy = loaded.act(obs, cond, deterministic=False)
    assert not np.array_equal(noisy, a.act(obs, cond)) and np.all(np.abs(noisy) <= 1)
