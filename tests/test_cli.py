"""The CLI end to end on the `smoke` preset: real Meta-World, real MLflow, real lerobot reader."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from dreamgen.data.store import TrajectoryStore
from dreamgen.sim.metaworld import replay
from dreamgen.tracking import list_runs
from dreamgen.world_model.checkpoint import load_world_model
from tests.conftest import REPO, dreamgen, in_process

pytestmark = pytest.mark.integration


def test_collected_experts_succeed_when_replayed(smoke_run):
    store = TrajectoryStore.open(smoke_run["run_dir"] / "real.zarr")
    meta = store.meta()
    assert set(meta["kind"]) == {"expert", "play"}
    assert len(store) == 2 * (3 + 1)
    experts = 0
    for episode in store.iter_episodes():
        m = episode.meta
        assert m["source"] == "real" and m["seed"] >= 0 and m["instruction"]
        assert m["task"] in ("drawer-open-v3", "button-press-topdown-v3")
        result = replay(m["task"], m["seed"], episode.action)
        # the recorded first observation is exactly the seeded layout
        np.testing.assert_allclose(result["obs"][0], episode.obs[0], atol=1e-6)
        assert result["success"] == m["success"]
        if m["kind"] == "expert":
            experts += 1
            assert result["success"], f"{m['episode_id']} does not succeed on replay"
    assert experts == 6


def test_export_is_read_by_lerobot(smoke_run):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    store = TrajectoryStore.open(smoke_run["run_dir"] / "real.zarr")
    dataset = LeRobotDataset("dreamgen/real", root=smoke_run["run_dir"] / "lerobot")
    assert dataset.num_episodes == len(store)
    assert dataset.num_frames == store.n_frames
    assert set(dataset.meta.tasks.index) == set(store.meta(["instruction"])["instruction"])
    first = store.episode(0)
    frame = dataset[0]
    np.testing.assert_allclose(frame["observation.state"].numpy(), first.obs[0])
    np.testing.assert_allclose(frame["action"].numpy(), first.action[0])
    assert frame["task"] == first.meta["instruction"]


def test_import_round_trip_through_lerobot(smoke_run, tmp_path):
    run_dir = tmp_path / "imported"
    args = ["experiment=smoke", f"run_dir={run_dir}", f"tracking.uri={smoke_run['uri']}", "progress=false",
            f"collect.import_root={smoke_run['run_dir'] / 'lerobot'}", "collect.import_repo_id=dreamgen/real"]
    dreamgen("collect", *args, cwd=tmp_path)
    original = TrajectoryStore.open(smoke_run["run_dir"] / "real.zarr")
    imported = TrajectoryStore.open(run_dir / "real.zarr")
    assert len(imported) == len(original) and imported.n_frames == original.n_frames
    for a, b in zip(original.iter_episodes(), imported.iter_episodes(), strict=True):
        for key, value in a.frames.items():
            np.testing.assert_array_equal(value, getattr(b, key), err_msg=key)
        assert b.meta["instruction"] == a.meta["instruction"] and b.meta["task"] == a.meta["task"]
        assert b.meta["kind"] == "imported"


def test_evaluation_and_mlflow_runs(smoke_run):
    summary = json.loads((smoke_run["run_dir"] / "eval.json").read_text())
    assert [row["task"] for row in summary["tasks"]] == ["drawer-open-v3", "button-press-topdown-v3"]
    for row in summary["tasks"]:
        assert row["episodes"] == 3 and row["ci95_low"] <= row["success_rate"] <= row["ci95_high"]
    assert "overall" in smoke_run["outputs"]["evaluate"].stdout + smoke_run["outputs"]["evaluate"].stderr
    runs = {r["run_name"]: r for r in list_runs(smoke_run["uri"], "dreamgen")}
    assert {"smoke/collect", "smoke/train-policy", "smoke/evaluate", "smoke/export"} <= set(runs)
    assert all(r["status"] == "FINISHED" for r in runs.values())
    assert runs["smoke/collect"]["params"]["collect.n_expert"] == "3"
    assert runs["smoke/collect"]["metrics"]["collect/expert_success_rate"] == 1.0
    assert runs["smoke/train-policy"]["metrics"]["policy/frames"] > 0
    evaluate = runs["smoke/evaluate"]["metrics"]
    assert evaluate["policy/success_rate"] == pytest.approx(summary["overall"]["success_rate"])
    # dataset lineage: the training run logged the store it read, with its digest
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=smoke_run["uri"])
    inputs = client.get_run(runs["smoke/train-policy"]["run_id"]).inputs.dataset_inputs
    digest = TrajectoryStore.open(smoke_run["run_dir"] / "real.zarr").digest()
    assert [(i.dataset.name, i.dataset.digest) for i in inputs] == [("real", digest)]
    for verb in ("collect", "train-policy", "evaluate", "export"):
        assert (smoke_run["run_dir"] / "configs" / f"{verb}.yaml").is_file()


def test_world_model_trains_reports_and_dreams_from_the_real_store(smoke_run):
    from dreamgen.dream.core import DreamConfig, StartPool
    from dreamgen.dream.vector import DreamVectorEnv
    from dreamgen.sim.metaworld import METAWORLD_LAYOUT, make_env

    wm_dir = smoke_run["run_dir"] / "world_model"
    report = json.loads((wm_dir / "report.json").read_text())
    model = load_world_model(wm_dir, layout=METAWORLD_LAYOUT)
    assert report["world_model_id"] == model.info["world_model_id"] and (wm_dir / "fidelity.png").is_file()
    one = report["fidelity"]["one_step"]
    assert one["transitions"] > 0 and np.isfinite(one["nmse"]) and np.isfinite(one["copy_nmse"])
    assert report["fidelity"]["open_loop"]["10"]["starts"] > 0
    for check in report["expert_in_dream"].values():  # measured, whatever the agreement is
        assert check["episodes"] == 2 and 0 <= check["agreement"] <= 1
    # the split is by episode: no held-out episode was trained on
    episodes = model.info["episodes"]
    assert not set(episodes["test"]) & set(episodes["train"]) and episodes["test"]
    runs = {r["run_name"]: r for r in list_runs(smoke_run["uri"], "dreamgen")}
    metrics = runs["smoke/train-world-model"]["metrics"]
    assert {"wm/train_nll", "wm/val_nll", "wm/one_step_nmse", "wm/h10_hand_mm_median"} <= set(metrics)
    # the dream env over the real store: the real env's spaces, start states from real episodes
    store = TrajectoryStore.open(smoke_run["run_dir"] / "real.zarr")
    pool = StartPool.from_store(store)
    env = DreamVectorEnv(model, pool, model.instructions.texts, len(model.instructions.texts),
                         DreamConfig(horizon=5), seed=0)
    real = make_env("drawer-open-v3")
    assert env.single_action_space == real.action_space
    assert env.single_observation_space["state"].shape == real.observation_space.shape
    obs, info = env.reset(seed=0)
    for i, ref in enumerate(info["start_ref"]):
        row = list(pool.ref).index(ref)
        np.testing.assert_array_equal(obs["state"][i], pool.obs[row])
    for _ in range(6):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        assert np.isfinite(obs["state"]).all() and np.isfinite(reward).all()
    assert info["reset"].any() or terminated.any() or truncated.any()


def _refused(args, capsys, *, expect: str) -> None:
    """``dreamgen <args>`` in this process (the entrypoint the CLI wraps every verb in; the real CLI's own
    parsing is covered in test_refusals): exit 2 and one error line saying ``expect``."""
    code, err = in_process(args[0], list(args[1:]), capsys)
    assert code == 2, err[-2000:]
    lines = [line for line in err.splitlines() if line.startswith("dreamgen: error:")]
    assert len(lines) == 1 and expect in lines[0], err[-2000:]


def _untouched(path) -> bool:
    return not path.exists()


def test_a_world_model_pretrained_on_broad_play_keeps_the_runs_held_out_episodes_and_refuses_leaks(
        smoke_run, tmp_path, capsys):
    """world_model.pretrain: another store's play (more tasks, its own seed) joins the training fold only — the
    val and test folds are exactly the run's own, the play's transitions are counted, its tasks' instructions
    are known — and a store that could leak a held-out layout, the run's own store, or none is refused."""
    run = smoke_run["run_dir"]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    base = ["experiment=smoke", f"tracking.uri={uri}", "progress=false"]
    play = ["collect.n_expert=0", "collect.n_play=3", "tasks=[drawer-open-v3,button-press-topdown-v3,reach-v3]"]
    assert in_process("collect", [*base, f"run_dir={tmp_path / 'play'}", "seed=7", *play], capsys)[0] == 0
    args = [*base, f"run_dir={tmp_path / 'pre'}", f"world_model.store={run / 'real.zarr'}",
            "world_model.max_epochs=3"]
    code, err = in_process("train-world-model", [*args, f"world_model.pretrain={tmp_path / 'play' / 'real.zarr'}"],
                           capsys)
    assert code == 0, err[-2000:]
    own = json.loads((run / "world_model" / "world_model.json").read_text())["info"]
    report = json.loads((tmp_path / "pre" / "world_model" / "report.json").read_text())
    meta = json.loads((tmp_path / "pre" / "world_model" / "world_model.json").read_text())
    info = meta["info"]
    assert info["episodes"] == own["episodes"]  # the same split of the run's store: nothing held out moved
    pre = report["pretrain"]
    assert info["pretrain"] == pre and pre["episodes"] == 9 and pre["tasks"] == sorted(
        ["drawer-open-v3", "button-press-topdown-v3", "reach-v3"])
    store = TrajectoryStore.open(tmp_path / "play" / "real.zarr")
    assert pre["transitions"] == sum(len(e) - 1 for e in store.iter_episodes()) and pre["store_digest"] == store.digest()
    smoke = json.loads((run / "world_model" / "report.json").read_text())
    assert report["transitions"]["train"] == smoke["transitions"]["train"] + pre["transitions"]
    assert report["transitions"]["test"] == smoke["transitions"]["test"]
    assert "reach-v3" in meta["instructions"]["tasks"] and set(report["expert_in_dream"]) == {
        "drawer-open-v3", "button-press-topdown-v3"}  # checked on the run's own tasks

    # refused in one sentence, before a run dir exists: a store with the run's layouts (same seed), the run's own
    # store, a path that is not there
    assert in_process("collect", [*base, f"run_dir={tmp_path / 'same'}", "seed=0", *play], capsys)[0] == 0
    for store_path, says in ((tmp_path / "same" / "real.zarr", "has the layout of world_model.store's"),
                             (run / "real.zarr", "is world_model.store itself"),
                             (tmp_path / "none", "does not exist")):
        out = tmp_path / "refused"
        code, err = in_process("train-world-model", [*args[:3], f"run_dir={out}", *args[4:],
                                                     f"world_model.pretrain={store_path}"], capsys)
        assert code == 2 and says in err and "Traceback" not in err, (store_path, err)
        assert not out.exists()

    # one pretrained checkpoint, many fine-tunes: a model of the play alone, then the run's store from it
    pre = [*base, f"run_dir={tmp_path / 'pre-play'}", f"world_model.store={tmp_path / 'play' / 'real.zarr'}",
           "seed=7", "world_model.max_epochs=3", "world_model.check_episodes=1"]
    assert in_process("train-world-model", pre, capsys)[0] == 0
    pretrained = load_world_model(tmp_path / "pre-play" / "world_model")
    init = f"world_model.init={tmp_path / 'pre-play' / 'world_model'}"
    code, err = in_process("train-world-model", [*args[:3], f"run_dir={tmp_path / 'ft'}", *args[4:], init], capsys)
    assert code == 0, err[-2000:]
    tuned = json.loads((tmp_path / "ft" / "world_model" / "world_model.json").read_text())
    report = json.loads((tmp_path / "ft" / "world_model" / "report.json").read_text())
    assert tuned["info"]["init"] == report["init"] and report["init"]["world_model_id"] == pretrained.info[
        "world_model_id"] and report["init"]["tasks"] == sorted(set(pretrained.instructions.tasks))
    assert tuned["info"]["episodes"] == own["episodes"] and report["epochs"] == 3  # the run's split; it trained
    assert tuned["instructions"]["texts"][:len(pretrained.instructions)] == pretrained.instructions.texts
    arch = ("hidden", "layers", "activation", "action_history")
    assert tuned["members"] == pretrained.members and tuple(tuned["config"]["gate"]) == pretrained.config.gate
    assert [tuned["config"][k] for k in arch] == [getattr(pretrained.config, k) for k in arch]
    # a member keeps its pretrained weights unless fine-tuning beats them on the run's val episodes: at a learning
    # rate that wrecks every step, the fine-tune is the pretrained model (its members in elite order)
    code, err = in_process("train-world-model", [*args[:3], f"run_dir={tmp_path / 'still'}", *args[4:], init,
                                                 "world_model.lr=1.0", "world_model.patience=2"], capsys)
    assert code == 0, err[-2000:]
    still = load_world_model(tmp_path / "still" / "world_model")
    order = still.info["elites"]
    for mine, theirs in zip(still.net.weights, pretrained.net.weights, strict=True):
        assert torch.equal(mine.data, theirs.data[order])

    # refused in one sentence before a run dir exists: a model trained on the run's own store, or on one of its
    # layouts (the smoke model, fine-tuned on the seed-0 play), or lacking one of the store's tasks, or none there
    out = tmp_path / "refused"
    for store_path, model_path, says in (
            (run / "real.zarr", run / "world_model", "trained on world_model.store itself"),
            (tmp_path / "same" / "real.zarr", run / "world_model", "trained on the layout of world_model.store's"),
            (tmp_path / "play" / "real.zarr", run / "world_model", "lacks task(s) reach-v3"),
            (run / "real.zarr", tmp_path / "none", "holds no world model")):
        code, err = in_process("train-world-model", [*base, f"run_dir={out}", f"world_model.store={store_path}",
                                                     f"world_model.init={model_path}"], capsys)
        assert code == 2 and says in err and "Traceback" not in err, (model_path, err)
        assert not out.exists()


def test_bad_input_is_refused_with_one_line_and_no_output(smoke_run, tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    base = ["experiment=smoke", f"tracking.uri={uri}", "progress=false"]
    # unknown task name
    _refused(["collect", *base, f"run_dir={tmp_path / 'a'}", "tasks=[drawer-opn-v3]"], capsys,
             expect="unknown task 'drawer-opn-v3'")
    assert _untouched(tmp_path / "a")
    # a run_dir that holds a different run: nothing in it may change
    run_dir = smoke_run["run_dir"]
    before = sorted(p.name for p in run_dir.iterdir())
    digest = TrajectoryStore.open(run_dir / "real.zarr").digest()
    _refused(["collect", *base, f"run_dir={run_dir}", "seed=5"], capsys, expect="holds a different run")
    assert sorted(p.name for p in run_dir.iterdir()) == before
    assert TrajectoryStore.open(run_dir / "real.zarr").digest() == digest
    # a directory that is not a dreamgen run
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    _refused(["collect", *base, f"run_dir={foreign}"], capsys, expect="not a dreamgen run")
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
    # corrupt and foreign zarr given as the training store
    import zarr

    zarr.open_group(str(tmp_path / "foreign.zarr"), mode="w").attrs["x"] = 1
    _refused(["train-policy", *base, f"run_dir={tmp_path / 'b'}", f"policy.store={tmp_path / 'foreign.zarr'}"],
             capsys, expect="not a dreamgen trajectory store")
    (tmp_path / "corrupt.zarr").mkdir()
    (tmp_path / "corrupt.zarr" / "zarr.json").write_text("{")
    _refused(["train-policy", *base, f"run_dir={tmp_path / 'b'}", f"policy.store={tmp_path / 'corrupt.zarr'}"],
             capsys, expect="unreadable zarr store")
    assert _untouched(tmp_path / "b")
    # bad ranges
    _refused(["collect", *base, f"run_dir={tmp_path / 'c'}", "collect.expert_noise=-1"], capsys,
             expect="collect.expert_noise=-1")
    _refused(["train-world-model", *base, f"run_dir={tmp_path / 'd'}", "world_model.elites=9"], capsys,
             expect="world_model.elites=9")
    _refused(["train-world-model", *base, f"run_dir={tmp_path / 'd'}", f"world_model.store={tmp_path / 'nope'}"],
             capsys, expect="not a trajectory store")
    assert _untouched(tmp_path / "d")
    unknown = dreamgen("unknown-verb", cwd=tmp_path, check=False)
    assert unknown.returncode == 2 and "unknown verb" in unknown.stderr
    assert not list(tmp_path.glob("*/real.zarr*"))
    assert not (tmp_path / "mlflow.db").exists() or not list_runs(uri, "dreamgen")


def _write_lerobot(root, *, nan_episode: int | None = None, obs_dim: int = 39, task: str = "open the drawer"):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    features = {"observation.state": {"dtype": "float32", "shape": (obs_dim,), "names": None},
                "action": {"dtype": "float32", "shape": (4,), "names": None}}
    dataset = LeRobotDataset.create("local/demos", fps=80, features=features, root=root, use_videos=False)
    for e in range(3):
        for t in range(6):
            state = np.full(obs_dim, 0.1 * t, dtype=np.float32)
            if e == nan_episode and t == 2:
                state[5] = np.nan
            dataset.add_frame({"observation.state": state, "action": np.zeros(4, np.float32), "task": task})
        dataset.save_episode()
    dataset.finalize()


def test_bad_lerobot_imports_are_refused(tmp_path, capsys):
    base = ["experiment=smoke", f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", "progress=false",
            "collect.import_repo_id=local/demos"]
    _write_lerobot(tmp_path / "nan", nan_episode=1)
    _refused(["collect", *base, f"run_dir={tmp_path / 'r1'}", f"collect.import_root={tmp_path / 'nan'}"],
             capsys, expect="episode 1 has non-finite observation.state at frame 2")
    _write_lerobot(tmp_path / "shape", obs_dim=12)
    _refused(["collect", *base, f"run_dir={tmp_path / 'r2'}", f"collect.import_root={tmp_path / 'shape'}"],
             capsys, expect="'observation.state' has shape (12,), expected (39,)")
    _write_lerobot(tmp_path / "cake", task="bake a cake")
    _refused(["collect", *base, f"run_dir={tmp_path / 'r3'}", f"collect.import_root={tmp_path / 'cake'}"],
             capsys, expect="'bake a cake' matches no known task")
    _write_lerobot(tmp_path / "window", task="open the window")  # a real task, but not one of this run's tasks
    _refused(["collect", *base, f"run_dir={tmp_path / 'r4'}", f"collect.import_root={tmp_path / 'window'}"],
             capsys, expect="resolve to ['window-open-v3'], which are not in tasks=")
    shutil.rmtree(tmp_path / "window" / "meta" / "episodes")  # incomplete: lerobot would go to the hub for it
    _refused(["collect", *base, f"run_dir={tmp_path / 'r5'}", f"collect.import_root={tmp_path / 'window'}"],
             capsys, expect="incomplete LeRobotDataset v3, missing meta/episodes/*/*.parquet")
    assert not any((tmp_path / r).exists() for r in ("r1", "r2", "r3", "r4", "r5"))


def test_an_interrupt_that_surfaces_as_another_error_is_still_an_interruption(tmp_path):
    """SIGINT landing inside a library call (say, an MLflow database write) comes out as that library's error;
    the verb must still end as interrupted (exit 130, "rerun to resume"), not crash with exit 1, and the
    library's own log of the error it caught (MLflow's database layer logs one with its traceback) is not
    printed as if it were one."""
    script = textwrap.dedent(f"""
        import logging, os, signal, time
        from hydra import compose, initialize_config_dir
        from jobs.common import entrypoint

        def run(cfg):
            try:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(5)
            except KeyboardInterrupt as exc:
                logging.getLogger("mlflow.store.db.utils").exception("SQLAlchemy database error")
                raise RuntimeError("(sqlite3.OperationalError) cannot rollback") from exc

        with initialize_config_dir(config_dir="{REPO / 'configs'}", version_base=None):
            cfg = compose(config_name="config", overrides=["experiment=smoke", "run_dir={tmp_path / 'run'}"])
        entrypoint(run)(cfg)
    """)
    _assert_interrupted(script)


def _assert_interrupted(script: str) -> None:
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 130, out.stderr[-2000:]
    assert "interrupted" in out.stderr and "rerun the same command to resume" in out.stderr
    assert "Traceback" not in out.stderr


def test_an_interrupt_swallowed_by_a_finalizer_still_stops_the_pipeline(tmp_path):
    """A signal handler runs between any two bytecodes, also inside a finalizer, where Python prints the
    KeyboardInterrupt as "ignored" and carries on: the stage runs to its end. The pipeline must stop at the
    next stage boundary (exit 130) with that stage recorded, not run on to exit 0 (a CI run did)."""
    script = textwrap.dedent(f"""
        import os, signal, time
        from pathlib import Path
        from hydra import compose, initialize_config_dir
        from jobs.common import entrypoint
        from jobs.pipeline import StageLedger

        class Closing:
            def __del__(self):  # the signal lands here, as it can in a library's finalizer
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.5)

        def stage():
            Closing()  # collected at once: its finalizer swallows the interrupt
            return {{"ok": True}}

        def run(cfg):
            ledger = StageLedger(Path(cfg.run_dir), {{}})
            ledger.run("first", stage)
            Path(cfg.run_dir, "second-ran").write_text("")  # must not happen
            ledger.run("second", stage)

        with initialize_config_dir(config_dir="{REPO / 'configs'}", version_base=None):
            cfg = compose(config_name="config", overrides=["experiment=smoke", "run_dir={tmp_path / 'run'}"])
        entrypoint(run)(cfg)
    """)
    _assert_interrupted(script)
    assert list(json.loads((tmp_path / "run" / "pipeline" / "stages.json").read_text())["done"]) == ["first"]
    assert not (tmp_path / "run" / "second-ran").exists()


def test_a_policy_judged_in_the_dream_is_labelled_as_such_and_bad_judges_are_refused(smoke_run, tmp_path, capsys):
    """``evaluate.where=dream`` on the smoke run: every task judged from its evaluation layouts once per member of
    the world model, the share unjudged reported, and the judgement logged under dream/*, never as real success."""
    run = smoke_run["run_dir"]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["experiment=smoke", f"run_dir={tmp_path / 'judged'}", f"tracking.uri={uri}", "progress=false",
            f"evaluate.policy={run / 'policy'}", f"evaluate.store={run / 'real.zarr'}",
            f"evaluate.world_model={run / 'world_model'}", "evaluate.where=dream"]
    assert in_process("evaluate", args)[0] == 0
    summary = json.loads((tmp_path / "judged" / "eval.json").read_text())
    model = json.loads((run / "world_model" / "world_model.json").read_text())
    assert summary["where"] == "dream" and summary["judge"]["world_model_id"] == model["world_model_id"]
    members = summary["judge"]["members"]
    assert members == 2  # the smoke preset's elites
    for row in summary["tasks"]:
        assert (row["episodes"], row["members"], row["dreams"]) == (3, members, 3 * members)
        assert row["successes"] <= row["judged"] <= row["dreams"]
        assert row["unjudged"] == pytest.approx(1 - row["judged"] / row["dreams"])
        assert row["ci95_low"] <= row["ci95_high"]
    [logged] = [r for r in list_runs(uri, "dreamgen") if r["run_name"] == "smoke/evaluate"]
    assert "dream/success_rate" in logged["metrics"] and "dream/unjudged" in logged["metrics"]
    assert not any(key.startswith("policy/") for key in logged["metrics"])

    # bad judges: one sentence naming the setting, exit 2, nothing written
    for override, says in (("evaluate.where=moon", "evaluate.where='moon'; accepted: real"),
                           ("evaluate.judge_head=luck", "evaluate.judge_head names head 'luck'"),
                           ("evaluate.judge=rule", "knows no success rule for task 'drawer-open-v3'"),
                           (f"evaluate.world_model={tmp_path / 'none'}", str(tmp_path / "none"))):
        out = tmp_path / "refused"
        code, err = in_process("evaluate", [*args[:1], f"run_dir={out}", *args[2:], override], capsys)
        assert code == 2 and says in err and "Traceback" not in err, (override, err)
        assert not out.exists()

    # the floor of a ranking: policy.family=random needs no checkpoint, is judged the same way and is reproducible
    random = [a for a in args if not a.startswith("evaluate.policy=")] + ["policy.family=random"]
    judged = []
    for name in ("random-a", "random-b"):
        assert in_process("evaluate", [*random[:1], f"run_dir={tmp_path / name}", *random[2:]], capsys)[0] == 0
        judged.append(json.loads((tmp_path / name / "eval.json").read_text()))
    assert judged[0]["policy"] == {"family": "random", "seed": 0} and judged[0]["where"] == "dream"
    assert [t["successes"] for t in judged[0]["tasks"]] == [t["successes"] for t in judged[1]["tasks"]]
    assert all(row["dreams"] == 3 * members for row in judged[0]["tasks"])


def test_a_random_policy_acts_uniformly_in_the_action_box_and_its_seed_reproduces_it():
    from policies.families import RandomPolicy

    obs, cond = np.zeros((4000, 39), np.float32), np.zeros((4000, 384), np.float32)
    a, b, c = (RandomPolicy.seeded(4, seed).act(obs, cond) for seed in (0, 0, 1))
    assert a.shape == (4000, 4) and a.dtype == np.float32 and np.abs(a).max() <= 1.0
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.abs(a.mean(0)).max() < 0.05 and np.allclose(a.var(0), 1 / 3, atol=0.03)  # U(-1, 1): mean 0, var 1/3
