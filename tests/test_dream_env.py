"""The dream env's rollout contract, checked against a model with known dynamics (s' = s + a).

Returns, termination, truncation, halting, the reward penalty, NaN handling and autoreset are compared
with the closed form through the gymnasium vector env, the single env, the SB3 adapter and RLlib.
"""

from __future__ import annotations

import numpy as np
import pytest

from dreamgen.dream.adapters import DreamSB3VecEnv, register_rllib_env
from dreamgen.dream.core import DreamConfig, DreamEnvError, StartPool
from dreamgen.dream.vector import DreamEnv, DreamVectorEnv
from dreamgen.errors import InstructionError
from tests.known_dynamics import POOL, LineModel, reference_episode

STEP = np.array([-0.25, -0.25], np.float32)


def _given(starts, refs=None):
    return {"start_obs": np.asarray(starts, np.float32), "start_refs": refs}


def test_vector_env_returns_termination_and_next_step_autoreset():
    env = DreamVectorEnv(LineModel(), POOL, "go home", 2, DreamConfig(horizon=6))
    obs, info = env.reset(seed=0, options=_given([[1, 1], [3, 0]], ["x@0", "y@0"]))
    assert info["start_ref"].tolist() == ["x@0", "y@0"]
    actions = np.stack([STEP, np.zeros(2, np.float32)])
    expect = [reference_episode(s, np.repeat(a[None], 10, 0), 6) for s, a in zip(obs["state"], actions, strict=True)]
    rewards, ends = [[], []], [None, None]
    for t in range(7):
        obs, reward, terminated, truncated, info = env.step(actions)
        for i in range(2):
            if ends[i] is None:
                rewards[i].append(reward[i])
                if terminated[i] or truncated[i]:
                    ends[i] = (t, bool(terminated[i]), info["reason"][i])
            elif ends[i][0] == t - 1:  # NEXT_STEP autoreset: a fresh start, reward 0, not done
                assert info["reset"][i] and reward[i] == 0 and not terminated[i] and not truncated[i]
                assert obs["state"][i].tolist() in POOL.obs[POOL.task == "home"].tolist()
    np.testing.assert_allclose(rewards[0], expect[0][0], rtol=1e-6)
    assert ends[0] == (3, True, "success") and expect[0][1] == "success"  # (1,1) reaches 0 in 4 steps
    np.testing.assert_allclose(rewards[1], expect[1][0], rtol=1e-6)
    assert ends[1] == (5, False, "horizon")  # never moves: truncated at the horizon
    assert (obs["instruction"] == LineModel.instructions.embeddings[0]).all()


def test_halting_and_penalty_follow_the_calibrated_bound():
    config = DreamConfig(horizon=50, halt_scale=1.0, penalty=0.5)
    model = LineModel()
    model.disagreement_bound = 5.0
    env = DreamVectorEnv(model, POOL, "go home", 2, config)
    env.reset(seed=1, options=_given([[3, 0], [1, 1]]))
    actions = np.array([[1, 0], [-0.25, -0.25]], np.float32)
    expect, _ = reference_episode(np.array([3.0, 0.0]), np.repeat(actions[:1], 10, 0), 50, bound=5.0, penalty=0.5)
    got = []
    for _ in range(3):
        _, reward, terminated, truncated, info = env.step(actions)
        got.append(reward[0])
    assert info["halted"][0] and truncated[0] and not terminated[0] and info["reason"][0] == "halted"
    np.testing.assert_allclose(got, expect, rtol=1e-6)
    assert not truncated[1] and info["reason"][1] == ""  # the other row keeps going
    assert model.disagreement_bound == 5.0 and DreamVectorEnv(
        model, POOL, "go home", 1, DreamConfig(halt=False)).core.bound == float("inf")


def test_nan_prediction_truncates_that_row_with_a_reason():
    env = DreamVectorEnv(LineModel(), POOL, ["break", "go home"], 2, DreamConfig(horizon=20))
    env.reset(seed=0)
    move = np.array([[-1, 0], [0, 0]], np.float32)
    _, r1, _, tr1, _ = env.step(move)
    obs, r2, te2, tr2, info = env.step(move)
    assert not tr1[0] and tr2[0] and not te2[0] and info["reason"][0] == "non-finite"
    assert np.isfinite(obs["state"]).all() and r2[0] == 0.0 and obs["state"][0].tolist() == [6.0, 0.0]
    assert not tr2[1] and info["reason"][1] == ""


def test_pool_draws_follow_the_instruction_task_and_seed():
    env = DreamVectorEnv(LineModel(), POOL, "go home too", 4)
    obs, info = env.reset(seed=3)
    assert (obs["state"] == [0.5, 0.0]).all() and set(info["start_seed"]) == {13}
    env2 = DreamVectorEnv(LineModel(), POOL, ["go home"] * 4, 4)
    a, ia = env2.reset(seed=5)
    b, ib = env2.reset(seed=5)
    assert (a["state"] == b["state"]).all() and (ia["start_ref"] == ib["start_ref"]).all()


def test_bad_input_is_refused_clearly():
    env = DreamVectorEnv(LineModel(), POOL, "go home", 2)
    env.reset(seed=0)
    with pytest.raises(DreamEnvError, match=r"shape \(3, 2\).*\(2, 2\)"):
        env.step(np.zeros((3, 2)))
    with pytest.raises(DreamEnvError, match=r"non-finite actions for envs \[1\]"):
        env.step(np.array([[0, 0], [np.nan, 0]]))
    with pytest.raises(InstructionError, match="'open the pod bay doors' is not in the world model's table"):
        DreamVectorEnv(LineModel(), POOL, "open the pod bay doors", 2)
    empty = StartPool(POOL.obs[:1], POOL.task[:1], POOL.ref[:1], POOL.seed[:1])
    with pytest.raises(DreamEnvError, match="no real start state for task 'home-b'"):
        DreamVectorEnv(LineModel(), empty, "go home too", 2)
    with pytest.raises(DreamEnvError, match="propagation"):
        DreamConfig(propagation="sometimes")


def test_single_env_passes_gymnasium_check_env_and_matches_closed_form():
    from gymnasium.utils.env_checker import check_env

    env = DreamEnv(LineModel(), POOL, "go home", DreamConfig(horizon=10))
    check_env(env, skip_render_check=True)
    obs, info = env.reset(seed=0, options={"start_obs": np.array([1, 1], np.float32), "start_ref": "z@3"})
    assert info["start_ref"] == "z@3"
    rewards, (expect, reason) = [], reference_episode(obs["state"], np.repeat(STEP[None], 10, 0), 10)
    terminated = truncated = False
    while not (terminated or truncated):
        obs, reward, terminated, truncated, step_info = env.step(STEP)
        rewards.append(reward)
    np.testing.assert_allclose(rewards, expect, rtol=1e-6)
    assert terminated and reason == "success" and step_info["reason"] == "success"


def test_sb3_adapter_same_step_autoreset_and_check_env():
    from stable_baselines3.common.env_checker import check_env

    check_env(DreamEnv(LineModel(), POOL, "go home"), warn=True)
    venv = DreamSB3VecEnv(LineModel(), POOL, "go home", 2, DreamConfig(horizon=6))
    venv.seed(0)
    obs = venv.reset()
    starts = obs["state"].copy()
    returns, done_at = np.zeros(2), [None, None]
    for t in range(6):
        obs, reward, done, infos = venv.step(np.repeat(STEP[None], 2, 0))
        for i in range(2):
            if done_at[i] is None:
                returns[i] += reward[i]
                if done[i]:
                    done_at[i] = t
                    assert "terminal_observation" in infos[i]
                    assert obs["state"][i].tolist() in POOL.obs[POOL.task == "home"].tolist()
    for i in range(2):
        rewards, reason = reference_episode(starts[i], np.repeat(STEP[None], 6, 0), 6)
        assert done_at[i] == len(rewards) - 1
        np.testing.assert_allclose(returns[i], sum(rewards), rtol=1e-5)
        truncated = infos[i]["TimeLimit.truncated"] if done_at[i] == 5 else None
        assert truncated in (None, reason == "horizon")


def test_sb3_ppo_learns_in_the_dream():
    from stable_baselines3 import PPO

    venv = DreamSB3VecEnv(LineModel(), POOL, ["go home", "go home too"] * 4, 8, DreamConfig(horizon=8), seed=0)

    def mean_return(model, episodes=16):
        env = DreamVectorEnv(LineModel(), POOL, ["go home", "go home too"] * 4, 8, DreamConfig(horizon=8))
        obs, _ = env.reset(seed=123)
        total, count, running = 0.0, 0, np.zeros(8)
        while count < episodes:
            action, _ = model.predict(obs, deterministic=True)
            obs, reward, terminated, truncated, _ = env.step(action)
            running += reward
            for i in np.flatnonzero(terminated | truncated):
                total, count, running[i] = total + running[i], count + 1, 0.0
        return total / count

    model = PPO("MultiInputPolicy", venv, n_steps=64, batch_size=128, learning_rate=3e-3, seed=0, verbose=0)
    before = mean_return(model)
    model.learn(total_timesteps=4096)
    after = mean_return(model)
    assert after > before + 1.0, (before, after)


def line_creator(env_config):
    return DreamVectorEnv(LineModel(), POOL, "go home", int(env_config.get("num_envs", 1)),
                          DreamConfig(horizon=int(env_config.get("horizon", 6))))


@pytest.mark.integration
def test_rllib_ppo_runs_one_iteration_on_the_vector_entry_point():
    import gymnasium as gym
    import ray
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.connectors.env_to_module import FlattenObservations

    name = register_rllib_env("dreamgen-test/line", line_creator)
    ray.init(address="local", num_cpus=1, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
    try:
        config = (
            PPOConfig()
            .environment(name, env_config={"horizon": 6})
            .env_runners(num_env_runners=0, num_envs_per_env_runner=4,
                         gym_env_vectorize_mode=gym.VectorizeMode.VECTOR_ENTRY_POINT,
                         env_to_module_connector=lambda env, spaces=None, device=None: FlattenObservations())
            .training(train_batch_size_per_learner=128, minibatch_size=64, num_epochs=1)
        )
        algo = config.build_algo()
        result = algo.train()
        assert result["env_runners"]["num_env_steps_sampled_lifetime"] >= 128
        runner = algo.env_runner_group.local_env_runner
        assert isinstance(runner.env.unwrapped, DreamVectorEnv)
        episodes = runner.sample(num_episodes=4, random_actions=True)
        for episode in episodes:
            states = np.stack([o["state"] if isinstance(o, dict) else o[-2:] for o in episode.get_observations()])
            rewards = episode.get_rewards()
            # closed form: reward = -|s'|_1, and every step moves by at most 1 per axis
            np.testing.assert_allclose(rewards, -np.abs(states[1:]).sum(1), rtol=1e-5)
            assert (np.abs(np.diff(states, axis=0)) <= 1 + 1e-6).all()
            assert episode.is_terminated == (np.abs(states[-1]).max() < 0.05) or episode.is_truncated
        algo.stop()
    finally:
        ray.shutdown()


def test_the_env_carries_previous_actions_as_model_context_and_clears_them_on_reset():
    from tests.known_dynamics import LagModel

    env = DreamVectorEnv(LagModel(), POOL, "go home", 1, DreamConfig(horizon=5))
    obs, _ = env.reset(seed=0, options=_given([[1.0, 1.0]]))
    states = []
    for action in ([-0.5, 0.0], [0.0, -0.5], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]):
        obs, *_ = env.step(np.array([action], np.float32))
        states.append(obs["state"][0].tolist())
    # the first action moves the state one step later; nothing moves on the first step (rest context)
    assert states[:4] == [[1.0, 1.0], [0.5, 1.0], [0.5, 0.5], [0.5, 0.5]]
    obs, *_ = env.step(np.array([[1.0, 1.0]], np.float32))  # autoreset step: context back to rest
    assert env.core.state.context.abs().sum() == 0 and states[4] == [0.5, 0.5]
    start = obs["state"][0].copy()
    obs, *_ = env.step(np.array([[0.0, 0.0]], np.float32))
    np.testing.assert_array_equal(obs["state"][0], start)  # the action sent at the reset step does not leak


def test_a_dream_ended_by_its_tasks_rule_needs_the_rule_and_ignores_the_head():
    """dream.success_head=rule: a dream given no rule is refused by name; given one (|s|_inf < 0.6, where the
    head wants < 0.05), the row from (0.5, 0) ends as a success at its first step."""
    config = DreamConfig(success_head="rule", horizon=5)
    with pytest.raises(DreamEnvError, match="dream.success_head=rule"):
        DreamVectorEnv(LineModel(), POOL, "go home", 1, config)
    env = DreamVectorEnv(LineModel(), POOL, "go home", 1, config, success_rule=lambda obs: np.abs(obs).max(-1) < 0.6)
    env.reset(seed=0, options={"start_obs": np.array([[0.5, 0.0]], np.float32)})
    _, _, terminated, _, info = env.step(np.array([[-0.1, 0.0]], np.float32))
    assert terminated[0] and info["reason"][0] == "success" and info["success_prob"][0] == 0.0
