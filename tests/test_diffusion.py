"""policy.family=diffusion: lerobot's Diffusion Policy, state-only, trained on the capped mix and evaluated on
the real simulator with per-episode action chunks; its checkpoint is lerobot's save_pretrained, checked."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import in_process

TINY = ["policy.family=diffusion", "policy.diffusion.epochs=3", "policy.diffusion.down_dims=[16,32]",
        "policy.diffusion.horizon=8", "policy.diffusion.n_action_steps=4", "policy.diffusion.inference_steps=4"]


def test_windows_are_cut_inside_their_own_episode_and_pad_like_lerobot():
    from policies.diffusion import windows

    obs, act, pad = windows([3, 2], n_obs=2, horizon=4)  # episodes at frames 0..2 and 3..4
    assert obs.tolist() == [[0, 0], [0, 1], [1, 2], [3, 3], [3, 4]]
    assert act.tolist() == [[0, 0, 1, 2], [0, 1, 2, 2], [1, 2, 2, 2], [3, 3, 4, 4], [3, 4, 4, 4]]
    assert pad.astype(int).tolist() == [[1, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 1], [1, 0, 0, 1], [0, 0, 1, 1]]


@pytest.mark.parametrize(("settings", "says"), [
    ({"horizon": 12}, "policy.diffusion.horizon=12 must be a multiple of 8"),
    ({"n_action_steps": 16}, "policy.diffusion.n_action_steps=16 must be <= horizon - n_obs_steps + 1 = 15"),
    ({"down_dims": [12, 24]}, "each a multiple of policy.diffusion.n_groups=8"),
    ({"inference_steps": 200}, "policy.diffusion.inference_steps=200 must be <= train_timesteps=100"),
    ({"scheduler": "euler"}, "accepted: DDIM, DDPM"),
    ({"epochs": 0}, "policy.diffusion.epochs=0; must be an integer >= 1"),
    ({"width": 3}, "policy.diffusion.width is not a setting"),
])
def test_bad_diffusion_settings_are_refused_by_name(settings, says):
    from dreamgen.errors import ConfigError
    from policies.diffusion import DiffusionSettings

    with pytest.raises(ConfigError, match="") as refused:
        DiffusionSettings.from_config(settings).check()
    assert says in str(refused.value)


def test_a_split_leaving_no_environment_state_or_naming_no_part_is_refused():
    from dreamgen.errors import ConfigError
    from dreamgen.sim.metaworld import METAWORLD
    from policies.diffusion import state_split

    state, env = state_split(METAWORLD, "hand", 39)
    assert state == [0, 1, 2] and env == list(range(3, 39))
    with pytest.raises(ConfigError, match="'wrist' is not a part of embodiment metaworld; its parts: hand, object"):
        state_split(METAWORLD, "wrist", 39)

    class Arm:
        name, parts = "arm2", {"joints": slice(0, 2)}

    with pytest.raises(ConfigError, match="covers every observation dim of arm2, which leaves no environment state"):
        state_split(Arm(), "joints", 2)


def test_a_family_the_installed_lerobot_lacks_is_refused_up_front(monkeypatch):
    import importlib.util

    from omegaconf import OmegaConf

    from dreamgen.errors import ConfigError
    from policies.families import get

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "lerobot.policies.diffusion" else real(name, *a))
    with pytest.raises(ConfigError, match="which the installed lerobot does not provide"):
        get("diffusion").check(OmegaConf.create({"policy": {"diffusion": {}}}))


def test_a_diffusion_arm_trains_on_the_capped_mix_acts_in_chunks_evaluates_and_round_trips(smoke_run, tmp_path, capsys):
    """The smoke preset's control arm (the capped share re-drawn from real frames) at cap 0.5, a few epochs: the
    cap holds, the checkpoint is lerobot's and loads to the same actions, each episode keeps its own chunk, the
    real simulator evaluates it, and a changed file or another family's checkpoint is refused."""
    from dreamgen.data.store import TrajectoryStore
    from dreamgen.errors import CheckpointError
    from policies import load_policy
    from policies.diffusion import DiffusionPolicy

    real = smoke_run["run_dir"] / "real.zarr"
    run_dir = tmp_path / "run"
    common = ["experiment=smoke", f"run_dir={run_dir}", f"tracking.uri={smoke_run['uri']}", "progress=false",
              f"policy.store={real}", f"evaluate.store={real}", *TINY, "policy.control=true",
              "policy.max_dream_fraction=0.5", "evaluate.n_episodes=2"]
    with contextlib.chdir(smoke_run["work"]):
        assert in_process("train-policy", common)[0] == 0
        policy = load_policy(run_dir / "policy")
        assert isinstance(policy, DiffusionPolicy) and policy.info["family"] == "diffusion"
        assert 0.4 <= policy.info["achieved_dream_fraction"] <= 0.5
        assert policy.info["dream_selection"]["control"] is True
        assert policy.state_dims == [0, 1, 2] and policy.parameter_count() == policy.info["parameters"] > 0
        assert (run_dir / "policy" / "lerobot" / "config.json").is_file()
        assert json.loads((run_dir / "policy" / "lerobot" / "config.json").read_text())["type"] == "diffusion"

        # chunks are per episode: a row's chunk is denoised every n_action_steps of its own, whatever the others do
        plans: list[int] = []
        plan = policy._plan
        policy._plan = lambda h, c: (plans.append(len(h)), plan(h, c))[1]  # type: ignore[method-assign]
        obs = TrajectoryStore.open(real).first_frames("obs", np.arange(3))
        cond = np.zeros((3, policy.cond_dim), np.float32)
        policy.reset(3)
        first = policy.act(obs, cond, rows=np.arange(3))
        for _ in range(3):
            policy.act(obs[[0, 2]], cond[[0, 2]], rows=np.array([0, 2]))  # row 1 has finished its episode
        assert plans == [3]  # 4 actions of the first chunk used by rows 0 and 2
        policy.act(obs[[0, 2]], cond[[0, 2]], rows=np.array([0, 2]))
        assert plans == [3, 2]
        assert first.shape == (3, 4) and np.all(np.abs(first) <= 1)
        again = load_policy(run_dir / "policy")
        again.reset(3)
        np.testing.assert_array_equal(again.act(obs, cond, rows=np.arange(3)), first)  # same seed, same noise

        assert in_process("evaluate", common)[0] == 0
        result = json.loads((run_dir / "eval.json").read_text())
        assert sum(row["episodes"] for row in result["tasks"]) == 4

        bc = smoke_run["run_dir"] / "policy"
        with pytest.raises(CheckpointError, match="a 'bc' policy checkpoint, not a diffusion one"):
            DiffusionPolicy.load(bc)
        code, err = in_process("generate", ["experiment=smoke", f"run_dir={smoke_run['run_dir']}", "progress=false",
                                            f"tracking.uri={smoke_run['uri']}", "generate.sampler.kind=policy",
                                            f"generate.sampler.policy={run_dir / 'policy'}"], capsys)
        assert code == 2 and "acts in action chunks kept per episode" in err, err

    weights = run_dir / "policy" / "lerobot" / "model.safetensors"
    blob = bytearray(weights.read_bytes())
    blob[-1] ^= 1
    weights.write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="changed after the policy was written"):
        load_policy(run_dir / "policy")


def test_lerobot_train_reads_real_demos_and_accepted_dreams_exported_as_one_dataset(tmp_path):
    """Real episodes + accepted dreams of a filtered store, exported as one LeRobotDataset v3 with the state split
    for Diffusion Policy and a source column, are read by lerobot's own `lerobot-train` for a few steps, offline."""
    import os
    import subprocess
    import sys

    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    from dreamgen.data.lerobot_io import export_lerobot
    from tests.test_data_robot import unknown_robot_episodes

    episodes = unknown_robot_episodes(n=6, length=20)
    for i, episode in enumerate(episodes):
        episode.meta.update(episode_id=f"ep{i}", source="dream" if i >= 4 else "real",
                            sampler="random" if i >= 4 else "", verdict="accept" if i >= 4 else "")
    root = tmp_path / "mix"
    assert export_lerobot(episodes, root, repo_id="lab/mix", obs_dim=7, action_dim=2, fps=10, robot_type="arm7",
                          split=([0, 1, 2, 3, 4], [5, 6])) == 6
    back = LeRobotDataset("lab/mix", root=root)
    assert tuple(back.meta.features["observation.state"]["shape"]) == (5,)
    assert tuple(back.meta.features["observation.environment_state"]["shape"]) == (2,)
    table = back.hf_dataset.with_format(None)
    sources = [table[i]["source"] for i in range(len(table))]
    assert sources == ["real"] * 80 + ["dream"] * 40
    record = json.loads(table[len(table) - 1]["provenance"])
    assert record == {"episode_id": "ep5", "sampler": "random", "verdict": "accept"}
    np.testing.assert_allclose(np.asarray(table[0]["observation.environment_state"]), episodes[0].obs[0, 5:])

    lerobot_train = Path(sys.executable).with_name("lerobot-train")
    out = tmp_path / "trained"
    done = subprocess.run([str(lerobot_train), "--dataset.repo_id=lab/mix", f"--dataset.root={root}",
                           "--policy.type=diffusion", "--policy.device=cpu", "--policy.push_to_hub=false",
                           "--policy.down_dims=[16,32]", "--policy.horizon=8", "--policy.n_action_steps=4",
                           "--steps=3", "--batch_size=8", "--num_workers=0", "--save_freq=3", "--eval_freq=0",
                           "--wandb.enable=false", f"--output_dir={out}"],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "dataset.num_episodes=6" in done.stdout + done.stderr
    trained = out / "checkpoints" / "000003" / "pretrained_model"
    assert json.loads((trained / "config.json").read_text())["type"] == "diffusion"
    assert (trained / "model.safetensors").stat().st_size > 0
