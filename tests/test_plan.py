"""The planner: known answers on known dynamics, its prior, purity in (state, seed), refusals."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
import torch

from dreamgen.errors import ConfigError
from dreamgen.plan.mppi import MPPIPlanner, PlannerConfig, shift
from dreamgen.world_model.base import InstructionTable, ObsLayout, Prediction, StepsRows
from policies.mpc import MPCPolicy
from tests.known_dynamics import TABLE, LagModel, LineModel


class PointMass(StepsRows):
    """True dynamics of a 1-D point mass under velocity control: ``x' = x + 0.1 a``, reward ``-0.001 x'^2``."""

    layout = ObsLayout("point", 1, dynamic=(0, 1))
    action_dim = 1
    cond_dim = 1
    context_dim = 0
    members = 1
    instructions = InstructionTable(["go to the origin"], ["origin"], np.ones((1, 1), np.float32))
    disagreement_bound = float("inf")
    device = torch.device("cpu")

    def condition(self, cond: torch.Tensor) -> torch.Tensor:
        return cond[None].clone()

    def predict(self, obs, action, cond: Any, *, generator=None, propagation="random", members=None,
                context=None) -> Prediction:
        nxt = obs + 0.1 * action
        zeros = torch.zeros(len(obs))
        return Prediction(nxt, {"reward": -0.001 * nxt[:, 0] ** 2, "success": zeros, "done": zeros}, zeros)


def run_mpc(model: Any, start: np.ndarray, emb: np.ndarray, config: PlannerConfig, steps: int, prior=None):
    """Closed loop on the model's own dynamics: observations, actions and rewards per step."""
    policy = MPCPolicy(model, MPPIPlanner(model, config, prior), seed=3)
    policy.reset(len(start))
    obs, rewards, actions = torch.as_tensor(start, dtype=torch.float32), [], []
    state = model.initial_state(obs, torch.as_tensor(emb))
    for _ in range(steps):
        action = policy.act(state.obs.numpy(), emb)
        state, pred = model.step(state, torch.as_tensor(action), propagation="mean")
        rewards.append(pred.head("reward").numpy())
        actions.append(action)
    return state.obs.numpy(), np.array(rewards), np.array(actions)


def test_point_mass_is_brought_to_the_origin():
    """EVALUATION.md §4b / mbrl-lib's check: start 1.0, reward -0.001 pos^2, 30 steps."""
    final, rewards, _ = run_mpc(PointMass(), np.array([[1.0]]), np.ones((1, 1), np.float32),
                                PlannerConfig(horizon=5, samples=64, prior_samples=0, elites=8, penalty=0.0), 30)
    assert abs(final[0, 0]) < 0.05
    assert rewards.max() > -0.02 and rewards[-1, 0] > -0.001 * 0.05 ** 2


@pytest.mark.parametrize("members", ["all", "one"])
def test_line_model_reaches_the_closed_form_optimum(members):
    """``s' = s + a``, reward ``-|s'|_1``: from (-2, 0.5) the best first action is (1, -0.5), success at step 2
    — also when every candidate is stepped by one member only."""
    model = LineModel()
    config = PlannerConfig(horizon=3, samples=512, prior_samples=0, iterations=8, elites=16, penalty=0.0,
                           members=members)
    final, rewards, actions = run_mpc(model, np.array([[-2.0, 0.5]]), TABLE.embeddings[[0]], config, 2)
    np.testing.assert_allclose(actions[0, 0], [1.0, -0.5], atol=0.05)
    assert np.abs(final).max() < 0.05  # success_prob 1 after the second step
    assert rewards[0, 0] == pytest.approx(-1.0, abs=0.1)


def test_the_prior_is_taken_when_it_is_best():
    """One Gaussian candidate against a prior that acts optimally: the plan is the prior's action."""
    model = LineModel()
    config = PlannerConfig(horizon=2, samples=1, prior_samples=1, iterations=1, elites=1, init_std=0.5,
                           penalty=0.0)
    planner = MPPIPlanner(model, config, prior=lambda obs, emb: np.clip(-obs, -1, 1))
    start = torch.tensor([[0.7, -0.3], [-0.2, 0.9]])
    emb = torch.as_tensor(TABLE.embeddings[[0, 0]])
    plan = planner.plan(model.initial_state(start, emb), emb, seed=0)
    np.testing.assert_allclose(plan.action.numpy(), -start.numpy(), atol=1e-6)


def test_a_plan_is_a_pure_function_of_state_and_seed():
    model = LineModel()
    planner = MPPIPlanner(model, PlannerConfig(horizon=4, samples=32, prior_samples=0, elites=4))
    emb = torch.as_tensor(TABLE.embeddings[[0, 1, 0]])
    state = model.initial_state(torch.tensor([[1.0, 1.0], [-2.0, 0.5], [0.3, 0.2]]), emb)
    warm = torch.full((3, 4, 2), 0.1)
    first = planner.plan(state, emb, warm=warm, seed=11)
    again = planner.plan(state, emb, warm=warm, seed=11)
    other = planner.plan(state, emb, warm=warm, seed=12)
    assert torch.equal(first.mean, again.mean) and torch.equal(first.action, again.action)
    assert not torch.equal(first.mean, other.mean)
    assert torch.equal(shift(first.mean)[:, :-1], first.mean[:, 1:]) and torch.equal(shift(first.mean)[:, -1],
                                                                                      first.mean[:, -1])


@pytest.mark.parametrize("members", ["all", "one"])
def test_disagreement_penalty_keeps_plans_where_the_model_agrees(members):
    """LineModel's disagreement is |s'|_inf: with a large λ the plan stays nearer the origin than without —
    also when candidates are stepped by one member and only the best are rescored by all."""
    model = LineModel()
    emb = torch.as_tensor(TABLE.embeddings[[0]])
    state = model.initial_state(torch.tensor([[0.5, 0.0]]), emb)
    plain = MPPIPlanner(model, PlannerConfig(horizon=2, samples=256, prior_samples=0, penalty=0.0,
                                             objective={"reward": 1.0}, members=members))
    careful = MPPIPlanner(model, PlannerConfig(horizon=2, samples=256, prior_samples=0, penalty=100.0,
                                               objective={"reward": 1.0}, members=members))
    assert careful.plan(state, emb, seed=0).value < plain.plan(state, emb, seed=0).value


def test_one_member_per_candidate_costs_one_kth_of_the_ensemble():
    """``members=one``: every candidate through one member; with a penalty only 2 x elites per row go through
    all K members again. Counted member evaluations: (N + 2E·K)·H·it against N·K·H·it."""
    model = LineModel()  # K = 2
    emb = torch.as_tensor(TABLE.embeddings[[0, 0]])
    state = model.initial_state(torch.tensor([[0.5, 0.0], [-1.0, 0.3]]), emb)
    costs = {}
    for members, penalty in (("all", 1.0), ("one", 1.0), ("one", 0.0)):
        planner = MPPIPlanner(model, PlannerConfig(horizon=3, samples=60, prior_samples=0, iterations=2, elites=4,
                                                   penalty=penalty, members=members))
        planner.plan(state, emb, seed=0)
        costs[members, penalty] = planner.member_steps
    rows, n, h, it, k, e = 2, 60, 3, 2, 2, 4
    assert costs["all", 1.0] == rows * n * k * h * it
    assert costs["one", 1.0] == rows * (n + 2 * e * k) * h * it
    assert costs["one", 0.0] == rows * n * h * it


class CountingLag(LagModel):
    """The lagged line model, recording what MPC hands it: the memory it resumes each plan from."""

    def __init__(self) -> None:
        self.resumed_from: list[np.ndarray] = []
        self.spread_calls = 0

    def resumed(self, state, memory):
        self.resumed_from.append(memory.context.numpy().copy())
        return super().resumed(state, memory)

    def spread(self, state, n):
        self.spread_calls += 1
        return super().spread(state, n)


def test_mpc_carries_its_rows_through_the_model_and_one_member_planning_asks_the_model_to_spread():
    """MPC keeps no copy of what a row carries: it resumes each plan from the model's state after the
    actions it executed (the lagged model's previous action; zeros at the start and after ``reset``), and
    ``members=one`` branches candidates with the model's ``spread`` (row j through member j mod K)."""
    model = CountingLag()
    emb = TABLE.embeddings[[0, 0]]
    policy = MPCPolicy(model, MPPIPlanner(model, PlannerConfig(horizon=3, samples=16, prior_samples=0, elites=4,
                                                               members="one", penalty=0.0)), seed=1)
    policy.reset(2)
    obs, executed = np.array([[1.0, 0.5], [-1.0, 0.0]], np.float32), []
    for _ in range(3):
        executed.append(policy.act(obs, emb))
        obs = obs + executed[-1]
    assert np.allclose(model.resumed_from[0], 0.0)
    for step in (1, 2):
        assert np.allclose(model.resumed_from[step], executed[step - 1])
    assert model.spread_calls == 3
    policy.reset(2)
    policy.act(obs, emb)
    assert np.allclose(model.resumed_from[-1], 0.0)
    spread = model.spread(model.initial_state(torch.zeros(2, 2), torch.as_tensor(emb)), 5)
    assert spread.member.tolist() == [0, 1, 0, 1, 0] * 2


def test_an_open_loop_rollout_starts_after_the_actions_before_its_start():
    """The lagged model moves by the previous action: from 0 with 0.5, -0.5 executed just before the start,
    then 0.1, 0.2 and 0.3, 0.4 — the states are 0, (0.5, -0.5), (0.6, -0.3)."""
    from dreamgen.world_model.metrics import rollout_open_loop

    out = rollout_open_loop(LagModel(), np.zeros((1, 2), np.float32), np.array([[[0.1, 0.2], [0.3, 0.4]]], np.float32),
                            ["go home"], np.array([[0.5, -0.5]], np.float32))
    np.testing.assert_allclose(out[0], [[0.0, 0.0], [0.5, -0.5], [0.6, -0.3]], atol=1e-6)


def test_a_state_model_draws_no_frames_and_its_dreams_carry_none():
    from dreamgen.dream.rollout import rollout_dreams
    from dreamgen.dream.vector import DreamVectorEnv
    from tests.known_dynamics import POOL

    model = LineModel()
    assert model.render(model.blank(3)) is None
    env = DreamVectorEnv(model, POOL, "go home", 2)
    episodes = rollout_dreams(env, lambda obs: -0.5 * obs["state"], seed=0)
    assert [e.images for e in episodes] == [None, None] and all(len(e) > 0 for e in episodes)


@pytest.mark.parametrize(("field", "value", "says"), [
    ("horizon", 0, "planner.horizon=0; must be >= 1"), ("samples", 0, "planner.samples=0"),
    ("temperature", 0.0, "planner.temperature=0.0; must be > 0"), ("penalty", -1.0, "planner.penalty=-1.0"),
    ("elites", 500, "planner.elites=500"), ("propagation", "best", "accepted: random, fixed, mean"),
    ("members", "some", "planner.members='some'; accepted: all, one"),
    ("objective", {}, "planner.objective={}; give head: weight pairs"),
    ("objective", {"success": float("nan")}, "planner.objective.success=nan; must be a finite number"),
    ("objective", {"reward": 0.0, "success": 0}, "planner.objective: every weight is 0"),
])
def test_bad_planner_settings_are_refused_by_name(field, value, says):
    with pytest.raises(ConfigError, match=says.replace("[", r"\[").replace("(", r"\(")):
        PlannerConfig(**{field: value})


def test_the_objective_names_heads_and_a_head_the_model_lacks_is_refused():
    """The objective is the heads config names: weight 1 on reward alone gives the reward-only plan; a
    head the model does not predict is refused, naming what it does predict."""
    model = LineModel()
    state = model.initial_state(torch.tensor([[0.5, 0.0]]), torch.as_tensor(TABLE.embeddings[[0]]))
    actions = torch.full((1, 2, 2), -0.5)
    generator = torch.Generator().manual_seed(0)
    both = MPPIPlanner(model, PlannerConfig(horizon=2, prior_samples=0, penalty=0.0,
                                            objective={"reward": 2.0, "success": 3.0}))
    value = both.objective(state, actions, generator)
    expected, walked = torch.zeros(1), state
    for t in range(2):
        walked, pred = model.step(walked, actions[:, t], propagation="mean")
        expected += 0.95 ** t * (2.0 * pred.head("reward") + 3.0 * pred.head("success"))
    torch.testing.assert_close(value, expected)
    with pytest.raises(ConfigError, match="planner.objective names head 'collision'; .* predicts reward, success, done"):
        MPPIPlanner(model, PlannerConfig(prior_samples=0, objective={"reward": 1.0, "collision": -5.0}))
    assert "w_collision=-5" in PlannerConfig(objective={"reward": 1.0, "collision": -5.0}).label()
    # ids from before heads were named: the default objective hashes as the two weights did
    assert PlannerConfig().identity()["success_weight"] == 50.0 and "objective" not in PlannerConfig().identity()
    assert PlannerConfig().label() == PlannerConfig(objective={"success": 50.0, "reward": 1.0}).label()
    # weight 0 is no term (how a preset, which cannot delete a default key, switches a head off): not required of
    # the model, the same objective, label and id as leaving it out
    off = PlannerConfig(horizon=2, prior_samples=0, penalty=0.0, objective={"reward": 2.0, "success": 3.0,
                                                                            "collision": 0.0})
    torch.testing.assert_close(MPPIPlanner(model, off).objective(state, actions, generator), expected)
    assert off.identity() == dataclasses.replace(off, objective={"reward": 2.0, "success": 3.0}).identity()


def test_a_prior_share_without_a_prior_is_refused():
    with pytest.raises(ConfigError, match="planner.prior_samples=16 needs a prior policy"):
        MPPIPlanner(LineModel(), PlannerConfig(prior_samples=16))


def test_planner_and_recovery_samplers_dream_to_success_in_the_known_model():
    """In the ``s' = s + a`` dream: the planner sampler succeeds from every start; the recovery sampler
    first pushes each row off its prior's path for exactly its drawn prefix, then comes back and succeeds."""
    from dreamgen.dream.core import DreamConfig
    from dreamgen.dream.rollout import rollout_dreams
    from dreamgen.dream.vector import DreamVectorEnv
    from policies.samplers import DemoPaths, SamplerSpec, make_sampler
    from tests.known_dynamics import POOL

    class Home:  # a prior that walks halfway home each step
        def act(self, obs, emb, *, deterministic=True):
            return np.clip(-0.5 * obs, -1, 1).astype(np.float32)

    config = PlannerConfig(horizon=3, samples=128, prior_samples=4, iterations=4, elites=16, penalty=0.0)
    env = DreamVectorEnv(LineModel(), POOL, "go home", 6, DreamConfig(horizon=30, halt=False))
    for kind in ("planner", "recovery"):
        spec = SamplerSpec(kind, noise=0.0, checkpoint="home", planner=config, recovery_steps=(2, 3),
                           recovery_noise=0.4)
        demos = DemoPaths([np.linspace(start, 0.0, 4, dtype=np.float32) for start in POOL.obs[:2]], (0, 2))
        sampler = make_sampler(spec, "home", np.random.default_rng(1), action_dim=2, policy=Home(), model=LineModel(),
                               demos=demos)
        sampler.reset(6)
        episodes = rollout_dreams(env, lambda obs, s=sampler: s.act(obs["state"], obs["instruction"]), seed=0)
        assert [e.meta["ended"] for e in episodes] == ["success"] * 6, kind
        if kind == "recovery":
            for row, episode in enumerate(episodes):
                prefix = int(sampler.prefix[row])
                pushed = episode.action[:prefix] - Home().act(episode.obs[:prefix], None)
                assert (np.abs(pushed).max(1) > 1e-3).all()  # every prefix step left the prior's path
                assert len(episode) > prefix
            assert "recovery(prefix=2-3 steps of policy:home" in spec.name and "back to the demo" in spec.name
            assert sorted(set(sampler.demo.tolist())) == [0, 1]  # each row matched the demo it started from


def test_demo_paths_match_starts_track_progress_forward_and_hold_the_last_frame():
    from policies.samplers import DemoPaths

    line = np.stack([np.linspace(0, 1, 11), np.zeros(11), np.full(11, 0.5)], 1).astype(np.float32)
    other = line.copy()
    other[:, 1] = 1.0
    demos = DemoPaths([line, other], dynamic=(0, 2))
    assert demos.weight[2] == 0 and demos.weight[1] > 0  # dims outside ``dynamic`` are never tracked
    assert demos.weight[0] == pytest.approx(1 / line[:, 0].std(), rel=1e-5)  # > the 1 cm floor
    np.testing.assert_array_equal(demos.match(np.stack([other[0], line[0]])), [1, 0])
    at = demos.progress(np.stack([line[4], line[2]]), np.array([0, 0]), np.array([0, 3]))
    np.testing.assert_array_equal(at, [4, 3])  # the second row is behind its progress: it never goes back
    ahead = demos.ahead(np.array([0]), np.array([9]), 3)
    np.testing.assert_array_equal(ahead[0], line[[10, 10, 10]])


def test_retarget_carries_a_demo_path_object_relative_then_goal_relative():
    """MimicGen's transform on a toy layout [hand 0:2 | object 2:4 | prev hand 4:6 | prev object 6:8 | goal 8:10]:
    before the demo moves the object, the hand keeps its offset to the (new) object; by the end, to the
    (new) goal; a demo that never moves the object is goal-relative throughout."""
    from policies.samplers import retarget_path

    T = 11
    path = np.zeros((T, 10), np.float32)
    path[:, 0] = np.linspace(0.0, 1.0, T)                 # the hand walks right
    path[:, 2] = np.where(np.arange(T) >= 5, path[:, 0], 0.5)  # it picks the object up at t=5 and carries it
    path[1:, 4:8] = path[:-1, 0:4]
    path[:, 8:10] = [1.0, 0.0]                            # the goal, where the demo ends
    start = path[0].copy()
    start[2:4] += [0.2, 0.1]                              # a new layout: the object moved
    start[8:10] += [-0.3, 0.4]                            # and the goal
    parts = {"hand": slice(0, 2), "obj": slice(2, 4), "goal": slice(8, 10), "history": 4}
    out = retarget_path(path, start, **parts)
    np.testing.assert_array_equal(out[0], start)
    np.testing.assert_allclose(out[1:5, 0:2] - path[1:5, 0:2], np.tile([0.2, 0.1], (4, 1)), atol=1e-6)  # approach
    np.testing.assert_allclose(out[-1, 0:2] - path[-1, 0:2], [-0.3, 0.4], atol=1e-6)  # goal-relative at the end
    np.testing.assert_allclose(out[-1, 2:4] - path[-1, 2:4], [-0.3, 0.4], atol=1e-6)  # the object goes with it
    np.testing.assert_allclose(out[3, 4:6] - path[3, 4:6], [0.2, 0.1], atol=1e-6)  # history shifted alike
    assert (out[:, 8:10] == start[8:10]).all()
    middle = out[8, 0:2] - path[8, 0:2]  # blended between the two frames in between
    assert 0 < np.linalg.norm(middle - [0.2, 0.1]) < np.linalg.norm(np.array([-0.3, 0.4]) - [0.2, 0.1])
    reach = path.copy()
    reach[:, 2:4] = 0.5  # the object never moves: the hand is goal-relative throughout
    out = retarget_path(reach, start, **parts)
    np.testing.assert_allclose(out[1:, 0:2] - reach[1:, 0:2], np.tile([-0.3, 0.4], (T - 1, 1)), atol=1e-6)


def test_retarget_sampler_follows_the_demo_from_a_new_start_in_the_known_model():
    """In ``s' = s + a`` with a demo from (1, 1) home: from another start the retargeted path is the demo
    shifted to that start's goal frame, and the dream follows it to success."""
    from dreamgen.dream.core import DreamConfig, StartPool
    from dreamgen.dream.rollout import rollout_dreams
    from dreamgen.dream.vector import DreamVectorEnv
    from policies.samplers import DemoPaths, RetargetSampler, make_mpc

    demo = np.linspace([1.0, 1.0], [0.0, 0.0], 6, dtype=np.float32)
    demos = DemoPaths([demo], (0, 2))
    pool = StartPool(np.array([[0.8, -0.6], [-0.5, 0.9]], np.float32), np.array(["home"] * 2),
                     np.array(["a@0", "b@0"], dtype=object), np.array([0, 1]))
    config = PlannerConfig(horizon=3, samples=128, prior_samples=0, iterations=4, elites=16, penalty=0.0,
                           track_weight=10.0)
    sampler = RetargetSampler(make_mpc(LineModel(), config, None, seed=0), demos, 0.0, np.random.default_rng(0),
                              hand=slice(0, 2), obj=slice(0, 0), goal=slice(2, 2), history=None)
    env = DreamVectorEnv(LineModel(), pool, "go home", 2, DreamConfig(horizon=30, halt=False))
    sampler.reset(2)
    episodes = rollout_dreams(env, lambda obs: sampler.act(obs["state"], obs["instruction"]), seed=0)
    assert [e.meta["ended"] for e in episodes] == ["success"] * 2
    assert sampler.routes is not None
    starts = {tuple(e.obs[0].tolist()) for e in episodes}  # each row follows a path from its own start
    assert {tuple(path[0].tolist()) for path in sampler.routes.paths} == starts



class GoalPlane(StepsRows):
    """``(x, y)' = (x, y) + 0.2 a`` toward a static goal ``(gx, gy)`` in obs dims 2:4; every head is 0, so only a
    goal term can steer a plan."""

    layout = ObsLayout("plane", 4, dynamic=(0, 2), static=(2, 4))
    action_dim = 2
    cond_dim = 1
    context_dim = 0
    members = 1
    instructions = InstructionTable(["go to the goal"], ["goal"], np.ones((1, 1), np.float32))
    disagreement_bound = float("inf")
    device = torch.device("cpu")

    def condition(self, cond: torch.Tensor) -> torch.Tensor:
        return cond[None].clone()

    def predict(self, obs, action, cond: Any, *, generator=None, propagation="random", members=None,
                context=None) -> Prediction:
        nxt = torch.cat([obs[:, :2] + 0.2 * action, obs[:, 2:]], 1)
        zeros = torch.zeros(len(obs))
        return Prediction(nxt, {"reward": zeros, "success": zeros, "done": zeros}, zeros)


def test_a_goal_term_plans_toward_each_rows_own_goal_and_needs_one():
    """``planner.objective.goal`` is minus each row's goal distance in cm on the predicted state (a GoalRule:
    part + offset against the observed goal). With no head in the objective, two rows with their own goals are
    each driven there by MPC; the distance is the known one; a plan without goals is refused."""
    from dreamgen.plan.mppi import GoalDistance
    from dreamgen.sim.base import GoalRule

    rule = GoalRule(slice(0, 2), slice(2, 4), 0.05, (0.1, 0.0))  # the "tool" sits 0.1 ahead of the part in x
    obs = np.array([[0.0, 0.0, 0.6, -0.4], [0.5, 0.5, -0.4, 0.3]], np.float32)
    known = np.linalg.norm(obs[:, :2] + [0.1, 0.0] - obs[:, 2:], axis=1)
    np.testing.assert_allclose(rule.distance(obs), known, rtol=1e-6)
    goal = GoalDistance.of([rule, rule])
    torch.testing.assert_close(goal(torch.as_tensor(obs)), torch.as_tensor(known, dtype=torch.float32))
    torch.testing.assert_close(goal.tile(3)(torch.as_tensor(obs).repeat_interleave(3, 0)),
                               torch.as_tensor(known, dtype=torch.float32).repeat_interleave(3))
    # an object's rule: the hand (obs 2:4 here, plus its offset) must reach the part first; a hand's rule has no approach
    carry = GoalRule(slice(0, 2), slice(2, 4), 0.05, hand=slice(2, 4), hand_offset=(0.0, 0.5))
    gap = np.linalg.norm(obs[:, 2:4] + [0.0, 0.5] - obs[:, :2], axis=1)
    np.testing.assert_allclose(carry.approach(obs), gap, rtol=1e-6)
    np.testing.assert_array_equal(rule.approach(obs), [0.0, 0.0])
    torch.testing.assert_close(GoalDistance.of([carry, rule]).approach(torch.as_tensor(obs)),
                               torch.tensor([gap[0], 0.0], dtype=torch.float32))
    model, emb = GoalPlane(), np.ones((2, 1), np.float32)
    config = PlannerConfig(horizon=3, samples=128, prior_samples=0, iterations=3, elites=16, penalty=0.0,
                           objective={"goal": 1.0})
    policy = MPCPolicy(model, MPPIPlanner(model, config), seed=3, goal_of=lambda e: GoalDistance.of([rule] * len(e)))
    policy.reset(2)
    state = model.initial_state(torch.as_tensor(obs), torch.as_tensor(emb))
    for _ in range(12):
        state, _ = model.step(state, torch.as_tensor(policy.act(state.obs.numpy(), emb)), propagation="mean")
    assert rule(state.obs.numpy()).all(), rule.distance(state.obs.numpy())  # both within 5 cm of their own goal
    with pytest.raises(ConfigError, match="planner.objective.goal plans toward each row's goal, and this planner "
                                          "was given none"):
        MPPIPlanner(model, config).plan(model.initial_state(torch.as_tensor(obs), torch.as_tensor(emb)), emb)


def test_the_demo_goal_preset_is_the_demo_with_known_cost_planner_dreams():
    """``experiment=demo-goal`` is ``make demo`` with the known-cost overrides docs/benchmarks.md measured: the
    same config but for the sampler, the objective and the dreams' success rule, and a planner of the same id
    as the overrides' (a weight of 0 is no term)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from jobs.generate import planner_config
    from tests.conftest import REPO

    overrides = ["generate.sampler.kind=planner", "~planner.objective.reward", "~planner.objective.success",
                 "+planner.objective.goal=1", "+planner.objective.approach=1", "dream.success_head=rule"]
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base=None):
        preset = compose(config_name="config", overrides=["experiment=demo-goal"])
        measured = compose(config_name="config", overrides=["experiment=demo", *overrides])
        demo = compose(config_name="config", overrides=["experiment=demo"])

    def leaves(node: Any, prefix: str = "") -> dict[str, Any]:
        if not isinstance(node, dict):
            return {prefix: node}
        return {k: v for key, child in node.items() for k, v in leaves(child, f"{prefix}.{key}" if prefix else key).items()}

    a, b = (leaves(OmegaConf.to_container(c, resolve=False)) for c in (preset, demo))
    assert {k for k in set(a) | set(b) if a.get(k) != b.get(k)} == {
        "name", "generate.sampler.kind", "dream.success_head", "planner.objective.reward",
        "planner.objective.success", "planner.objective.goal", "planner.objective.approach"}
    assert planner_config(preset).identity() == planner_config(measured).identity()
    assert planner_config(preset).objective == {"goal": 1.0, "approach": 1.0}
