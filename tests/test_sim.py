"""The real world: seeded layouts reproduce exactly, differ across seeds; experts succeed."""

from __future__ import annotations

import numpy as np
import pytest

from dreamgen.errors import ConfigError
from dreamgen.sim.metaworld import GOAL_SLICE, OBJECT_SLICE, TASKS, check_tasks, make_env, make_expert, replay


@pytest.mark.parametrize("task", ["pick-place-v3", "drawer-open-v3", "reach-v3"])
def test_reset_by_seed_reproduces_the_layout(task):
    env = make_env(task)
    first, info = env.reset(seed=11)
    other, _ = env.reset(seed=12)
    again, _ = env.reset(seed=11)
    assert info["layout_seed"] == 11
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first[OBJECT_SLICE], other[OBJECT_SLICE]) or \
        not np.allclose(first[GOAL_SLICE], other[GOAL_SLICE])
    assert np.any(first[GOAL_SLICE] != 0), "the goal must be observable"
    # a fresh env gives the same layout for the same seed (no hidden state across envs)
    np.testing.assert_array_equal(make_env(task).reset(seed=11)[0], first)


def test_layouts_are_not_frozen_across_many_seeds():
    env = make_env("pick-place-v3")
    objects = {tuple(np.round(env.reset(seed=s)[0][OBJECT_SLICE], 5)) for s in range(20)}
    assert len(objects) == 20


def test_expert_replay_is_deterministic():
    env, expert = make_env("drawer-open-v3"), make_expert("drawer-open-v3")
    obs, _ = env.reset(seed=5)
    actions = []
    for _ in range(120):
        action = expert(obs)
        actions.append(action)
        obs, _, _, _, info = env.step(action)
        if info["success"]:
            break
    assert info["success"]
    assert replay("drawer-open-v3", 5, actions)["success"]
    assert not replay("drawer-open-v3", 5, np.zeros((len(actions), 4), dtype=np.float32))["success"]


def test_table_and_unknown_tasks():
    from metaworld.policies import ENV_POLICY_MAP

    assert set(TASKS) == set(ENV_POLICY_MAP) and len(TASKS) == 50  # every v3 task Meta-World ships an expert for
    assert all(len(spec.instructions) >= 3 for spec in TASKS.values())
    with pytest.raises(ConfigError, match="unknown task 'drawer-opn-v3'.*did you mean drawer-open-v3"):
        check_tasks(["drawer-opn-v3"])
    with pytest.raises(ConfigError, match="empty"):
        check_tasks([])


def test_the_success_rules_agree_with_the_simulators_success_flag():
    """Every task with a rule: the scripted expert and a noisy one (which misses more often), every frame's rule
    against info["success"]. Reach's rule approximates the fingers' centre from the hand (±2 mm): it may
    disagree on a frame at the boundary, never on whether an episode succeeded."""
    from dreamgen.sim.metaworld import METAWORLD, SUCCESS_RULES

    rng = np.random.default_rng(0)
    for task in SUCCESS_RULES:
        rule, env, expert = METAWORLD.success_rule(task), make_env(task, max_episode_steps=150), make_expert(task)
        frames = agree = 0
        for seed, noise in ((1, 0.0), (2, 0.0), (3, 0.5), (4, 1.0)):
            obs, _ = env.reset(seed=seed)
            flags, ruled = [], []
            for _ in range(150):
                action = np.clip(expert(obs) + rng.normal(0, noise, 4), -1, 1)
                obs, _, _, truncated, info = env.step(action)
                flags.append(bool(info["success"]))
                ruled.append(bool(rule(obs)))
                if truncated:
                    break
            frames, agree = frames + len(flags), agree + int(np.sum(np.equal(flags, ruled)))
            assert any(flags) == any(ruled), (task, seed)
        assert agree / frames >= (0.97 if task == "reach-v3" else 1.0), (task, agree, frames)
        env.close()
    assert METAWORLD.success_rule("door-open-v3") is None  # no rule written for it: the judge refuses it


def test_fetchs_success_rule_is_its_is_success_on_every_frame():
    """gymnasium-robotics' own flag against the rule on the flat state (gripper or block within 5 cm of the goal),
    frame by frame, for the expert and a noisy one that misses: the rule is the simulator's criterion exactly."""
    from dreamgen.sim.fetch import FETCH, SUCCESS_PARTS

    rng = np.random.default_rng(0)
    for task in SUCCESS_PARTS:
        rule, env, expert = FETCH.success_rule(task), FETCH.make_env(task), FETCH.make_expert(task)
        flags, ruled = [], []
        for seed, noise in ((1, 0.0), (2, 0.0), (3, 0.7)):
            obs, _ = env.reset(seed=seed)
            for _ in range(50):
                obs, _, _, truncated, info = env.step(np.clip(expert(obs) + rng.normal(0, noise, 4), -1, 1))
                flags.append(bool(info["success"]))
                ruled.append(bool(rule(obs)))
                if truncated:
                    break
        env.close()
        assert flags == ruled, task
        assert any(flags) and not all(flags), (task, sum(flags), len(flags))  # both outcomes were checked
    assert FETCH.success_rule("FetchSlide-v4") is None


def test_every_task_loads_and_its_scripted_expert_solves_a_layout():
    """All 50 tasks: the env loads with the 39-dim state and the shipped expert reaches success within Meta-World's
    500 steps on one of layouts 0-2 (soccer's and stick-pull's experts miss layout 0; 103 of 105 measured)."""
    unsolved = []
    for task in TASKS:
        env, expert = make_env(task), make_expert(task)
        for seed in range(3):
            obs, _ = env.reset(seed=seed)
            assert obs.shape == (39,), task
            success = False
            for _ in range(500):
                obs, _, _, _, info = env.step(expert(obs))
                if success := bool(info["success"]):
                    break
            if success:
                break
        else:
            unsolved.append(task)
    assert not unsolved, unsolved
