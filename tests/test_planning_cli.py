"""Planning with the trained smoke world model, through the CLI: planner and recovery dreams, MPC on the
real simulator, and the refusals that come before any work."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dreamgen.data.store import TrajectoryStore
from tests.conftest import dreamgen

# a small planner: the smoke world model is tiny and the suite runs on 2 cores
SMALL = ["planner.horizon=3", "planner.samples=24", "planner.prior_samples=4", "planner.iterations=2",
         "planner.elites=6"]


@pytest.mark.integration
def test_planner_recovery_and_retarget_dreams_start_at_real_seeds_and_name_their_sampler(smoke_run, tmp_path):
    real = TrajectoryStore.open(smoke_run["run_dir"] / "real.zarr")
    first = {m: obs for m, obs in zip(real.meta(["episode_id"])["episode_id"],
                                      real.first_frames("obs", np.arange(len(real))), strict=True)}
    for kind in ("planner", "recovery", "retarget"):
        store_path = tmp_path / f"{kind}.zarr"
        dreamgen("generate", *smoke_run["common"], *SMALL, f"generate.store={store_path}", "generate.workers=0",
                 "generate.episodes=2", f"generate.sampler.kind={kind}", "generate.sampler.recovery.steps=[2,4]",
                 cwd=smoke_run["work"])
        store = TrajectoryStore.open(store_path)
        meta = store.meta()
        assert len(store) == 4 and (meta["kind"] == kind).all()
        assert all(s.startswith(f"{kind}(") and "prior=policy:" in s and "penalty=1" in s for s in meta["sampler"])
        for index, episode in enumerate(store.iter_episodes()):
            start = meta["start_ref"][index].split("@")[0]
            np.testing.assert_array_equal(episode.obs[0], first[start])  # a real start, replayable by its seed
            assert meta["seed"][index] >= 0 and np.abs(episode.action).max() <= 1.0
    assert "nearest demo's path carried to the start layout" in meta["sampler"][0]  # the last kind: retarget


@pytest.mark.integration
def test_mpc_is_evaluated_on_the_real_simulator_next_to_its_prior(smoke_run, tmp_path):
    run_dir = tmp_path / "mpc"
    args = [a for a in smoke_run["common"] if not a.startswith("run_dir=")]
    world_model, prior = smoke_run["run_dir"] / "world_model", smoke_run["run_dir"] / "policy"
    dreamgen("evaluate", *args, *SMALL, f"run_dir={run_dir}", "policy.family=mpc",
             f"policy.mpc.world_model={world_model}", f"policy.mpc.prior={prior}", f"evaluate.policy={prior}",
             f"evaluate.store={smoke_run['run_dir'] / 'real.zarr'}", "evaluate.n_episodes=2", "evaluate.max_steps=40",
             cwd=smoke_run["work"])
    report = json.loads((run_dir / "eval.json").read_text())
    assert report["policy"]["family"] == "mpc" and report["policy"]["prior"] == str(prior)
    assert [t["task"] for t in report["tasks"]] == ["drawer-open-v3", "button-press-topdown-v3"]
    assert all(t["episodes"] == 2 and 0 <= t["successes"] <= 2 for t in report["tasks"])


@pytest.mark.integration
@pytest.mark.parametrize(("bad", "says"), [
    (["generate.sampler.kind=planner", "planner.horizon=0"], "planner.horizon=0; must be >= 1"),
    (["generate.sampler.kind=recovery", "planner.temperature=0"], "planner.temperature=0.0; must be > 0"),
    (["generate.sampler.kind=planner", "planner.samples=many"], "planner.samples='many': must be an integer"),
    (["generate.sampler.kind=planner", "generate.world_model=/nonexistent"], "not a world-model checkpoint"),
    (["generate.sampler.kind=planner", "+planner.objective.goal=1"], "planner.objective.goal: embodiment metaworld "
     "knows no goal distance for button-press-topdown-v3 (its success is not a part reaching a goal); tasks with "
     "one: reach-v3"),
])
def test_bad_planner_settings_are_refused_before_any_work(smoke_run, tmp_path, bad, says):
    out = dreamgen("generate", *smoke_run["common"], f"generate.store={tmp_path / 'd.zarr'}", *bad,
                   cwd=smoke_run["work"], check=False)
    assert out.returncode == 2 and says in out.stderr and "Traceback" not in out.stderr, out.stderr[-800:]
    assert not (tmp_path / "d.zarr").exists()


@pytest.mark.integration
def test_mpc_on_a_task_the_model_never_saw_is_refused(smoke_run, tmp_path):
    args = [a for a in smoke_run["common"] if not a.startswith("run_dir=")]
    out = dreamgen("evaluate", *args, f"run_dir={tmp_path / 'r'}", "policy.family=mpc", "tasks=[reach-v3]",
                   f"policy.mpc.world_model={smoke_run['run_dir'] / 'world_model'}",
                   f"policy.mpc.prior={smoke_run['run_dir'] / 'policy'}",
                   f"evaluate.store={smoke_run['run_dir'] / 'real.zarr'}", cwd=smoke_run["work"], check=False)
    assert out.returncode == 2 and "never trained on task 'reach-v3'" in out.stderr, out.stderr[-800:]
    assert not (tmp_path / "r").exists()


@pytest.mark.integration
def test_mpc_toward_the_goal_of_a_task_without_a_goal_distance_is_refused(smoke_run, tmp_path):
    args = [a for a in smoke_run["common"] if not a.startswith("run_dir=")]
    out = dreamgen("evaluate", *args, f"run_dir={tmp_path / 'r'}", "policy.family=mpc", "+planner.objective.goal=1",
                   f"policy.mpc.world_model={smoke_run['run_dir'] / 'world_model'}",
                   f"policy.mpc.prior={smoke_run['run_dir'] / 'policy'}",
                   f"evaluate.store={smoke_run['run_dir'] / 'real.zarr'}", cwd=smoke_run["work"], check=False)
    assert out.returncode == 2 and "planner.objective.goal: embodiment metaworld knows no goal distance for " \
        "button-press-topdown-v3" in out.stderr and "tasks with one: reach-v3" in out.stderr, out.stderr[-800:]
    assert not (tmp_path / "r").exists()


def test_each_rows_goal_is_its_instructions_task_rule():
    """``goal_distances``: an evaluation episode's instruction (any of its task's table paraphrases) gives that
    task's goal rule: reach the hand's tool centre, push the puck, each to the observed goal."""
    import numpy as np
    import torch
    from omegaconf import OmegaConf

    from dreamgen.language import default_encoder
    from dreamgen.plan.mppi import PlannerConfig
    from dreamgen.sim.metaworld import METAWORLD
    from jobs.evaluate import goal_distances

    cfg = OmegaConf.create({"embodiment": "metaworld", "tasks": ["reach-v3", "push-v3"]})
    assert goal_distances(cfg, PlannerConfig()) is None  # no goal term: nothing to know
    goal_of = goal_distances(cfg, PlannerConfig(objective={"goal": 1.0}))
    texts = [METAWORLD.tasks["push-v3"].instructions[-1], METAWORLD.tasks["reach-v3"].instructions[1]]
    goal = goal_of(default_encoder().encode(texts))
    obs = np.random.default_rng(0).uniform(-1, 1, (2, METAWORLD.obs_dim)).astype(np.float32)
    expected = [METAWORLD.goal_rule("push-v3").distance(obs[0]), METAWORLD.goal_rule("reach-v3").distance(obs[1])]
    torch.testing.assert_close(goal(torch.as_tensor(obs)), torch.as_tensor(np.array(expected), dtype=torch.float32))
