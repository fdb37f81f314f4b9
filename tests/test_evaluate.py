"""Evaluation maths and seed disjointness; a policy judged in a dream of known dynamics."""

from __future__ import annotations

import numpy as np
import pytest

from dreamgen.dream.core import DreamConfig, StartPool
from dreamgen.errors import ConfigError
from dreamgen.evaluate import evaluation_seeds, format_table, wilson_interval
from dreamgen.judge import bootstrap, judge_task, percentile_interval, ranking, ranking_intervals, summarise_dream
from dreamgen.seeding import EVAL_SEED_BASE, derive_seed
from tests.known_dynamics import LineModel, reference_episode


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


class MemberLine(LineModel):
    """``s' = s + a * (1 + member / 2)``: member 0 is the true line, member 1 overshoots by half. Halting at a
    disagreement (|s'|_inf) above 0.4."""

    disagreement_bound = 0.4

    def predict(self, obs, action, cond, *, generator=None, propagation="random", members=None, context=None):
        scale = 1.0 + 0.5 * members.float()[:, None]
        return super().predict(obs, action * scale, cond)


def test_a_policy_judged_in_the_dream_counts_each_start_once_per_member_and_leaves_halted_dreams_unjudged():
    """Known answer: the policy a = -s reaches home in one step under member 0; under member 1 it lands at
    -s/2 — from (1, 1) past the halting bound (unjudged, not a failure), from 0.5 and 0.3 a failure in 2 steps."""
    starts = StartPool(np.array([[1.0, 1.0], [0.5, 0.0], [0.3, 0.0]], np.float32), np.array(["home"] * 3),
                       np.array(["a@0", "b@0", "c@0"], object), np.array([1, 2, 3]))
    calls: list[np.ndarray] = []
    resets: list[int] = []

    def act(obs, cond, rows, images):
        calls.append(rows.copy())
        assert images is None and cond.shape == (len(rows), 3)
        return -obs

    result = judge_task(act, "home", starts, ["go home"] * 3, model=MemberLine(), max_steps=2, config=DreamConfig(),
                        judge_head="success", seed=0, reset=resets.append)
    assert resets == [6]
    np.testing.assert_array_equal(result.success, [[True, False], [True, False], [True, False]])
    np.testing.assert_array_equal(result.judged, [[True, False], [True, True], [True, True]])
    row = result.as_dict()
    assert (row["episodes"], row["members"], row["dreams"], row["judged"], row["successes"]) == (3, 2, 6, 5, 3)
    assert row["success_rate"] == 3 / 5 and abs(row["unjudged"] - 1 / 6) < 1e-12 and row["mean_steps_to_success"] == 1.0
    low, high = result.interval
    assert 0.0 <= low <= 0.6 <= high <= 1.0 and low < high  # the members disagree: the interval is wide
    # step 1 acts for every row; step 2 only for the two member-1 rows still running (rows 3 and 5)
    np.testing.assert_array_equal(calls[0], np.arange(6))
    np.testing.assert_array_equal(calls[1], [3, 5])
    assert len(calls) == 2
    summary = summarise_dream([result], judge={"head": "success"})
    assert summary["where"] == "dream" and summary["overall"]["success_rate"] == 3 / 5
    assert "unjudged" in format_table(summary)


def test_dream_judgement_intervals_have_known_answers():
    rng = np.random.default_rng(0)
    every = np.ones((4, 3), bool)
    assert percentile_interval(bootstrap(every, every, rng)) == (1.0, 1.0)  # members and starts all agree
    none = np.zeros((4, 3), bool)
    assert percentile_interval(bootstrap(none, none, rng)) == (0.0, 1.0)  # nothing judged: no information
    draws = bootstrap(np.eye(4, 2, dtype=bool), every[:, :2], rng, draws=4000)  # 2 of 8 dreams succeed
    assert (draws[:, 1] == 8).all()  # every dream judged: each resample holds 4 starts x 2 members
    assert abs(draws[:, 0].mean() / 8 - 0.25) < 0.02  # resampling starts and members keeps the rate on average
    low, high = percentile_interval(draws)
    assert low == 0.0 and 0.5 <= high < 1.0


def test_ranking_statistics_have_known_answers():
    real = [0.1, 0.4, 0.5, 0.9]
    same = ranking([0.2, 0.5, 0.6, 1.0], real)  # a shifted copy: perfect in every statistic
    assert same["pearson"] == pytest.approx(1.0) and same["spearman"] == pytest.approx(1.0)
    assert same["mmrv"] == 0.0 and same["regret_at_1"] == 0.0
    swapped = ranking([0.1, 0.5, 0.4, 0.9], real)  # the middle two swapped: each is violated by 0.1
    assert swapped["mmrv"] == pytest.approx((0 + 0.1 + 0.1 + 0) / 4) and swapped["regret_at_1"] == 0.0
    assert swapped["spearman"] == pytest.approx(0.8)
    wrong_best = ranking([0.9, 0.4, 0.5, 0.1], real)  # the dream picks the real worst
    assert wrong_best["regret_at_1"] == pytest.approx(0.8) and wrong_best["pearson"] < 0
    assert ranking([1.0, 1.0, 0.0, 0.0], real)["regret_at_1"] == pytest.approx(0.9 - 0.25)  # a tie: its mean


def test_a_dream_judged_by_the_tasks_rule_ignores_the_success_head():
    """The rule |s|_inf < 0.6 on the dreamed state: member 1's dream from (0.5, 0) lands at -0.25, a success by
    the rule although the head (|s| < 0.05) says no."""
    starts = StartPool(np.array([[0.5, 0.0]], np.float32), np.array(["home"]), np.array(["a@0"], object),
                       np.array([1]))
    result = judge_task(lambda obs, cond, rows, images: -obs, "home", starts, ["go home"], model=MemberLine(),
                        max_steps=2, config=DreamConfig(), judge_head="success", seed=0,
                        rule=lambda obs: np.abs(obs).max(-1) < 0.6)
    np.testing.assert_array_equal(result.success, [[True, True]])


def test_ranking_intervals_cover_the_statistics_and_collapse_for_a_perfect_judge():
    real = [0.1, 0.2, 0.4, 0.5, 0.9, 0.7]
    perfect = ranking_intervals([x + 0.05 for x in real], real, draws=300)
    assert perfect["mmrv"] == (0.0, 0.0) and perfect["regret_at_1"] == pytest.approx((0.0, 0.0), abs=1e-12)
    assert perfect["spearman"][0] == pytest.approx(1.0)
    noisy = [0.2, 0.1, 0.5, 0.3, 0.6, 0.8]
    bounds, point = ranking_intervals(noisy, real, draws=300), ranking(noisy, real)
    for name in ("pearson", "spearman"):
        low, high = bounds[name]
        assert low <= point[name] <= high and low < high


def test_a_policy_judged_in_an_exact_world_model_scores_its_real_success():
    """Every member the true dynamics (LineModel: s' = s + a): the dream's success over 40 starts equals the
    success of the same policy stepped through the dynamics directly (reference_episode), start by start."""
    rng = np.random.default_rng(3)
    obs = rng.uniform(-2, 2, (40, 2)).astype(np.float32)
    starts = StartPool(obs, np.array(["home"] * 40), np.array([f"s{i}@0" for i in range(40)], object), np.arange(40))

    def policy(state):
        return -0.4 * state  # reaches home within 6 steps from near, not from far

    result = judge_task(lambda o, c, rows, images: policy(o), "home", starts, ["go home"] * 40, model=LineModel(),
                        max_steps=6, config=DreamConfig(), judge_head="success", seed=0)
    real = []
    for start in obs:
        s, actions = start.astype(np.float64), []
        for _ in range(6):
            actions.append(policy(s))
            s = s + np.clip(actions[-1], -1, 1)
        real.append(reference_episode(start, np.array(actions), 6)[1] == "success")
    assert 0 < sum(real) < 40  # a spread: some succeed, some do not
    np.testing.assert_array_equal(result.success, np.repeat(np.array(real)[:, None], 2, 1))
    assert result.rate == np.mean(real) and result.judged.all()
