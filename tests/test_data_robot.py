"""A robot with no simulator (``embodiment=data``): a LeRobotDataset of an unknown robot — 7-dim state, 2-dim
action — is imported, its layout read from the data and written into the store; the pipeline trains a world
model on it, dreams, scores and filters, and sweeps with every arm judged in the dream; the mix is exported
as a LeRobotDataset that lerobot reads back frame for frame, and a policy is judged in the dream.
``audit`` is refused with a sentence. Every verb runs in this process through its
entrypoint (the CLI's own wrapper)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dreamgen.data.lerobot_io import export_lerobot
from dreamgen.data.store import TrajectoryStore
from dreamgen.types import Episode
from tests.conftest import in_process

TASKS = ("bring the puck to the mark", "hold the puck still")


def unknown_robot_episodes(n: int = 24, length: int = 30) -> list[Episode]:
    """A planar pusher: state = puck xy, puck velocity xy, a wrist angle, goal xy (static); action = force xy.
    Succeeds when the puck is within 5 cm of the goal; every other episode pushes at random (and fails)."""
    rng = np.random.default_rng(0)
    episodes = []
    for i in range(n):
        text = TASKS[i % 2]
        obs = np.zeros((length, 7), np.float32)
        obs[0, :2] = rng.uniform(-0.3, 0.3, 2)
        obs[:, 5:7] = obs[0, :2] + rng.uniform(0.1, 0.3, 2) * (1 if text == TASKS[0] else 0.5)
        aimless = i % 4 >= 2
        action = np.zeros((length, 2), np.float32)
        for t in range(length - 1):
            toward = obs[t, 5:7] - obs[t, :2]
            action[t] = rng.uniform(-1, 1, 2) if aimless else np.clip(3 * toward + rng.normal(0, 0.3, 2), -1, 1)
            obs[t + 1, 2:4] = 0.5 * obs[t, 2:4] + 0.05 * action[t]
            obs[t + 1, :2] = obs[t, :2] + obs[t + 1, 2:4]
            obs[t + 1, 4] = obs[t, 4] + 0.1 * action[t, 0]
        success = np.linalg.norm(obs[:, :2] - obs[:, 5:7], axis=1) < 0.05
        episodes.append(Episode(obs, action, -np.linalg.norm(obs[:, :2] - obs[:, 5:7], axis=1).astype(np.float32),
                                success, np.zeros(length, bool), {"instruction": text, "task": text}))
    return episodes


def test_a_robot_without_a_simulator_imports_trains_dreams_filters_and_exports(tmp_path, capsys):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    source = tmp_path / "arm7-demos"
    export_lerobot(unknown_robot_episodes(), source, repo_id="lab/arm7", obs_dim=7, action_dim=2, fps=10,
                   robot_type="arm7")
    run_dir = tmp_path / "run"
    common = ["experiment=smoke", "embodiment=data", "tasks=[]", f"run_dir={run_dir}", "progress=false",
              f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", "robot.name=arm7", "robot.static_dims=2",
              "+robot.parts.puck=[0,2]", f"collect.import_root={source}", "collect.import_repo_id=lab/arm7",
              "generate.sampler.kind=random", "generate.workers=0", "filter.quality_threshold=0.2",
              "evaluate.max_steps=30"]

    # a robot that cannot be: more static dims than it has state
    code, err = in_process("collect", [*common, "robot.static_dims=7"], capsys)
    assert code == 2 and "robot.static_dims=7" in err and not run_dir.exists()

    # the main job without a simulator: no audit, the filter at its given threshold, the sweep judged in the dream
    code, err = in_process("pipeline", common, capsys)
    assert code == 2 and "set sweep.judge=dream" in err and not run_dir.exists()
    swept = ["sweep.judge=dream", "sweep.caps=[0,0.5]", "sweep.seeds=[0]", "sweep.control=false", "sweep.workers=0"]
    assert in_process("pipeline", [*common, *swept])[0] == 0
    report = json.loads((run_dir / "report.json").read_text())
    assert "audit" not in report and report["sweep"]["judged_in"] == "dream"
    assert report["sweep"]["verdict"].startswith("JUDGED IN THE DREAM") and set(report["sweep"]["per_cap"]) == {"0", "0.5"}
    real = TrajectoryStore.open(run_dir / "real.zarr")
    spec = real.info["embodiment_spec"]
    assert (real.obs_dim, real.action_dim, real.info["embodiment"]) == (7, 2, "arm7")
    assert spec["tasks"] == sorted(TASKS) and spec["static_dims"] == 2 and spec["max_steps"] == 30
    assert spec["fps"] == 10 and real.info["success_labels"] == "next.success" and len(real) == 24

    model = json.loads((run_dir / "world_model" / "world_model.json").read_text())
    assert model["info"]["embodiment"] == "arm7"
    assert model["layout"] == {"name": "arm7-state", "obs_dim": 7, "dynamic": [0, 5], "history": None,
                               "static": [5, 7]}
    assert "puck_mm" in json.loads((run_dir / "world_model" / "report.json").read_text())["fidelity"]["open_loop"]["10"]
    dreams = TrajectoryStore.open(run_dir / "dream.zarr")
    assert len(dreams) == 16 and dreams.info["embodiment"] == "arm7"
    np.testing.assert_array_equal(dreams.episode(0).obs[:, 5:], np.repeat(dreams.episode(0).obs[:1, 5:], len(dreams.episode(0)), 0))
    verdicts = dreams.meta(["verdict"])["verdict"]
    accepted = int((verdicts == "accept").sum())
    assert accepted > 0

    out = tmp_path / "mix"
    assert in_process("export", [*common, f"export.store={run_dir / 'dream.zarr'}", f"export.root={out}",
                           "export.verdicts=[accept]", "export.repo_id=lab/arm7-dreams"])[0] == 0
    back = LeRobotDataset("lab/arm7-dreams", root=out)
    frames = sum(len(dreams.episode(i)) for i in np.flatnonzero(verdicts == "accept"))
    assert back.meta.total_episodes == accepted and back.meta.total_frames == frames
    assert back.meta.fps == 10 and back.meta.robot_type == "arm7"
    assert tuple(back.meta.features["observation.state"]["shape"]) == (7,)

    # real demos + accepted dreams as one dataset, the state split for Diffusion Policy, each frame's source named
    both = tmp_path / "real-and-dreams"
    assert in_process("export", [*common, f"export.root={both}", f"export.dream_store={run_dir / 'dream.zarr'}",
                                 "export.state_part=puck", "export.repo_id=lab/arm7-mix"])[0] == 0
    mixed = LeRobotDataset("lab/arm7-mix", root=both)
    assert mixed.meta.total_episodes == len(real) + accepted
    assert tuple(mixed.meta.features["observation.environment_state"]["shape"]) == (5,)
    sources = mixed.hf_dataset.with_format(None)["source"]
    assert sources.count("dream") == frames and sources[0] == "real"
    code, err = in_process("export", [*common, f"export.root={tmp_path / 'none'}", "export.state_part=wrist"], capsys)
    assert code == 2 and "export.state_part='wrist' is not a part of embodiment arm7; its parts: puck" in err
    assert not (tmp_path / "none").exists()

    # what needs a simulator says so, and writes nothing
    before = sorted(p.name for p in run_dir.iterdir())
    code, err = in_process("audit", common, capsys)
    assert code == 2 and "`dreamgen audit` needs a simulator and embodiment arm7 has none" in err
    code, err = in_process("evaluate", common, capsys)
    assert code == 2 and "judge the policy in the world model's dream (evaluate.where=dream)" in err
    assert sorted(p.name for p in run_dir.iterdir()) == before

    # ... and a policy is judged in the dream instead, from the real episodes the world model never trained on
    assert in_process("train-policy", common)[0] == 0
    judge = tmp_path / "judged"
    assert in_process("evaluate", [*common, f"run_dir={judge}", f"evaluate.policy={run_dir / 'policy'}",
                                   f"evaluate.store={run_dir / 'real.zarr'}", f"evaluate.world_model={run_dir / 'world_model'}",
                                   "evaluate.where=dream"])[0] == 0
    judged = json.loads((judge / "eval.json").read_text())
    assert judged["where"] == "dream" and judged["judge"]["starts"] == "the world model's held-out test episodes"
    assert sorted(row["task"] for row in judged["tasks"]) == sorted(TASKS)
    assert sum(row["episodes"] for row in judged["tasks"]) == len(model["info"]["episodes"]["test"])


@pytest.mark.parametrize(("overrides", "says"), [
    (["embodiment=data"], "embodiment=data is a robot described by its data: import its LeRobotDataset first"),
    (["embodiment=data", "collect.import_root={root}", "collect.import_repo_id=lab/arm7",
      "collect.import_obs_key=observation.image"], "feature 'observation.image' missing"),
])
def test_a_robot_without_data_or_with_the_wrong_feature_is_refused_by_name(overrides, says, tmp_path, capsys):
    root = tmp_path / "arm7"
    export_lerobot(unknown_robot_episodes(n=2, length=5), root, repo_id="lab/arm7", obs_dim=7, action_dim=2)
    code, err = in_process("train-world-model", ["experiment=smoke", "tasks=[]", f"run_dir={tmp_path / 'run'}",
                                           f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
                                           *[o.format(root=root) for o in overrides]], capsys)
    assert code == 2 and says in err, err
    assert not Path(tmp_path / "run").exists()


def test_without_success_labels_the_better_half_by_return_succeeds_per_task():
    from dreamgen.data.lerobot_io import reward_success

    episodes = unknown_robot_episodes(n=8, length=6)
    for i, episode in enumerate(episodes):
        episode.reward[:] = i  # returns rise with i within each task
        episode.success[:] = True
    reward_success(episodes)
    for task in TASKS:
        group = [(i, e) for i, e in enumerate(episodes) if e.meta["task"] == task]
        labels = [bool(e.success[-1]) for _, e in group]
        assert labels == [False, False, True, True]  # above the task's median return
        assert not any(e.success[:-1].any() for _, e in group)  # success only at the last frame
