"""The second real world: gymnasium-robotics' Fetch arm behind the same Embodiment contract as Meta-World.

Layouts reproduce from a seed, the flat state holds what the tasks observe where the layout says, the
scripted experts solve the tasks, and the smoke main job runs end to end on Fetch through the same code
paths (retarget dreams: the demos carried by the embodiment's hand/object/goal parts, followed by MPPI).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from dreamgen.data.store import TrajectoryStore
from dreamgen.sim.fetch import FETCH, FINGERS, GOAL, GRIP, OBJECT
from tests.conftest import dreamgen, in_process


def test_fetch_layouts_reproduce_from_a_seed_and_the_flat_state_is_where_the_layout_says():
    for task in FETCH.tasks:
        env = FETCH.make_env(task)
        first, info = env.reset(seed=7)
        raw = env.unwrapped._get_obs()
        again, _ = env.reset(seed=7)
        other, _ = env.reset(seed=8)
        assert first.shape == (FETCH.obs_dim,) and first.dtype == np.float32 and info["layout_seed"] == 7
        np.testing.assert_array_equal(first, again)
        assert not np.array_equal(first[GOAL], other[GOAL])  # a new goal per seed
        np.testing.assert_allclose(first[GOAL], raw["desired_goal"], rtol=1e-6)
        np.testing.assert_allclose(first[GRIP], raw["observation"][:3], rtol=1e-6)
        np.testing.assert_allclose(first[FINGERS], raw["observation"][3:5] if task == "FetchReach-v4" else
                                   raw["observation"][9:11], rtol=1e-6)
        if task == "FetchReach-v4":
            assert not first[OBJECT].any()  # no block: its slots stay 0
        else:
            np.testing.assert_allclose(first[OBJECT], raw["achieved_goal"], rtol=1e-6)  # the block is what moves
        env.close()


@pytest.mark.parametrize(("task", "at_least"), [("FetchReach-v4", 10), ("FetchPush-v4", 6),
                                                ("FetchPickAndPlace-v4", 9)])
def test_the_scripted_experts_solve_their_tasks_and_replay_reproduces_them(task, at_least):
    env, expert = FETCH.make_env(task, max_episode_steps=60), FETCH.make_expert(task)
    solved = []
    for seed in range(10):
        obs, _ = env.reset(seed=seed)
        actions, success = [], False
        for _ in range(60):
            actions.append(expert(obs))
            obs, _, _, _, info = env.step(actions[-1])
            success = success or info["success"]
        solved.append(success)
        if seed < 2:  # the same actions from the same seed: the same outcome and the same states
            replayed = FETCH.replay(task, seed, actions)
            assert replayed["success"] == success
            np.testing.assert_allclose(replayed["obs"][-1], obs, atol=1e-6)
    env.close()
    assert sum(solved) >= at_least, solved


@pytest.mark.slow  # a learning run of about a minute (make test-slow); the default suite keeps its 15-minute budget
def test_the_smoke_main_job_runs_on_fetch_end_to_end(tmp_path, capsys):
    run_dir = tmp_path / "run"
    common = ["experiment=fetch-smoke", f"run_dir={run_dir}", f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
              "progress=false"]
    loose = ["filter.quality_threshold=0", "filter.support_margin=100", "filter.jump_margin=100",
             "filter.disagreement_step=100", "filter.disagreement_mean=100"]
    result = dreamgen("pipeline", *common, *loose, "generate.sampler.kind=retarget", cwd=tmp_path, timeout=600)
    assert "real-simulator success per cap" in result.stdout and "Ray workers" in result.stdout + result.stderr
    real, dreams = TrajectoryStore.open(run_dir / "real.zarr"), TrajectoryStore.open(run_dir / "dream.zarr")
    assert real.info["embodiment"] == dreams.info["embodiment"] == "fetch" and real.obs_dim == 22
    model = json.loads((run_dir / "world_model" / "world_model.json").read_text())
    assert model["info"]["embodiment"] == "fetch" and model["layout"]["name"] == "fetch-v4-state"
    assert set(real.meta(["task"])["task"].tolist()) == {"FetchReach-v4", "FetchPush-v4"}
    assert {s.split("(")[0] for s in dreams.meta(["sampler"])["sampler"].tolist()} == {"retarget"}
    labels = json.loads((run_dir / "audit" / "labels.json").read_text())
    assert labels and all(label["start_error"] < 1e-5 for label in labels.values())  # replayed from the real start
    report = json.loads((run_dir / "report.json").read_text())
    assert set(report["sweep"]["per_cap"]) == {"0", "0.5"}

    # Meta-World's verbs on Fetch's data: refused by name, nothing written
    code, err = in_process("train-world-model", ["experiment=smoke", f"run_dir={tmp_path / 'mw'}",
                                                 f"world_model.store={run_dir / 'real.zarr'}",
                                                 f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}"], capsys)
    assert code == 2 and "was made for embodiment fetch, not metaworld" in err
    assert not (tmp_path / "mw").exists()
