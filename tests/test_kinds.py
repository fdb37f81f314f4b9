"""The world-model contract from outside the library: a kind and a head registered by a test module
(``tests/linear_kind.py``) run train-world-model → generate → train-quality → filter → train-policy, and
the head ends dreams and enters the planner's objective by config alone."""

from __future__ import annotations

import contextlib
import dataclasses
import json

import numpy as np
import pytest
import torch

import tests.linear_kind  # noqa: F401  (registers the kind "linear")
from dreamgen.errors import ConfigError
from tests.conftest import in_process

LOOSE = ["filter.quality_threshold=0", "filter.support_margin=100", "filter.jump_margin=100",
         "filter.disagreement_step=100", "filter.disagreement_mean=100"]


def test_a_kind_and_a_head_from_a_test_module_run_from_world_model_to_policy(smoke_run, tmp_path):
    from hydra import compose, initialize_config_dir

    from dreamgen.data.store import TrajectoryStore
    from dreamgen.plan.mppi import MPPIPlanner
    from dreamgen.world_model.checkpoint import load_world_model
    from jobs.generate import planner_config
    from tests.conftest import REPO
    from tests.linear_kind import LinearWorldModel

    real = smoke_run["run_dir"] / "real.zarr"
    common = ["experiment=smoke", f"run_dir={tmp_path / 'run'}", f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
              "progress=false", f"world_model.store={real}", f"policy.store={real}", "world_model.kind=linear",
              "world_model.check_episodes=1",  # a run dir is one run: every verb is given the same settings
              "generate.workers=0", "generate.episodes=2", "dream.horizon=15", "generate.sampler.kind=planner",
             "planner.prior_samples=0", "planner.samples=16", "planner.elites=4", "+planner.objective.still=5.0",
             "dream.done_head=still", "dream.done_threshold=0.9", *LOOSE]
    with contextlib.chdir(tmp_path):
        for verb, extra in (("train-world-model", []), ("generate", []), ("train-quality", []), ("filter", []),
                            ("train-policy", [f"run_dir={tmp_path / 'mixed'}",  # the mix is another run
                                              f"policy.dream_store={tmp_path / 'run' / 'dream.zarr'}",
                                              "policy.max_dream_fraction=0.5", "policy.epochs=2"])):
            code, _ = in_process(verb, [*common, *extra])
            assert code == 0, f"{verb} exited {code}"

    recorded = json.loads((tmp_path / "run" / "world_model" / "world_model.json").read_text())
    assert recorded["kind"] == "linear"  # one spelling from config to checkpoint
    model = load_world_model(tmp_path / "run" / "world_model")
    assert isinstance(model, LinearWorldModel) and "still" in model.heads

    store = TrajectoryStore.open(tmp_path / "run" / "dream.zarr")
    meta = store.meta(["sampler", "ended", "verdict"])
    assert len(store) == 4 and all("w_still=5" in s for s in meta["sampler"].tolist())
    # the head ends dreams: replayed through the (deterministic) model, each dream ends "done" at the first step
    # whose "still" reaches dream.done_threshold, and runs to the horizon if none does
    for i, ended in enumerate(meta["ended"].tolist()):
        episode = store.episode(i)
        state = model.initial_state(torch.as_tensor(episode.obs[:1]), torch.as_tensor(model.instructions.embeddings[:1]))
        stills = []
        for action in episode.action:
            state, pred = model.step(state, torch.as_tensor(action[None]), propagation="mean")
            stills.append(float(pred.head("still")[0]))
            if stills[-1] >= 0.9:
                break
        assert ended == ("done" if stills[-1] >= 0.9 else "horizon"), (ended, stills)
    assert "done" in set(meta["ended"].tolist())  # the planner, told to value stillness, stops the robot
    assert (meta["verdict"] == "accept").sum() > 0
    policy = json.loads((tmp_path / "mixed" / "policy" / "policy.json").read_text())["info"]
    assert policy["dream_selection"]["store_digest"] == store.digest() and policy["dream_selection"]["episodes"] > 0

    # the planner's objective: the configured weight times the head, nothing else changed
    def planner(*overrides: str) -> MPPIPlanner:
        with initialize_config_dir(config_dir=str(REPO / "configs"), version_base=None):
            cfg = compose(config_name="config", overrides=["planner.prior_samples=0", *overrides])
        return MPPIPlanner(model, planner_config(cfg))

    state = model.initial_state(torch.as_tensor(store.episode(0).obs[:1]),
                                torch.as_tensor(model.instructions.embeddings[:1]))
    actions = torch.as_tensor(np.random.default_rng(0).uniform(-1, 1, (1, 5, model.action_dim)), dtype=torch.float32)
    without, with_still = (p.objective(state, actions, torch.Generator().manual_seed(0), None)
                           for p in (planner(), planner("+planner.objective.still=-2.0")))
    stills, walked = [], state
    for t in range(5):
        walked, pred = model.step(walked, actions[:, t], propagation="mean")
        stills.append(0.95 ** t * pred.head("still"))
    torch.testing.assert_close(with_still - without, -2.0 * sum(stills))
    with pytest.raises(ConfigError, match="planner.objective names head 'collision'.*predicts reward, success, done, still"):
        planner("+planner.objective.collision=-1.0")


def test_a_policy_family_from_a_test_module_trains_loads_and_evaluates(smoke_run, tmp_path):
    """``policy.family=mean-action`` (tests/linear_kind.py): train-policy fits it, load_policy reads it back
    by its kind, evaluate runs it on the real simulator; the sweep and train-policy refuse an unknown family
    naming the registered ones."""
    from policies import load_policy
    from tests.linear_kind import MeanActionPolicy

    real = smoke_run["run_dir"] / "real.zarr"
    common = ["experiment=smoke", f"run_dir={tmp_path / 'run'}", f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
              "progress=false", f"policy.store={real}", f"evaluate.store={real}", "policy.family=mean-action",
              "evaluate.n_episodes=1"]
    with contextlib.chdir(tmp_path):
        for verb in ("train-policy", "evaluate"):
            code, _ = in_process(verb, common)
            assert code == 0, f"{verb} exited {code}"
    policy = load_policy(tmp_path / "run" / "policy")
    assert isinstance(policy, MeanActionPolicy) and policy.mean.shape == (4,)
    assert json.loads((tmp_path / "run" / "eval.json").read_text())["overall"]["episodes"] == 2
    with contextlib.chdir(tmp_path):
        code, err = in_process("train-policy", [*common[:-3], f"run_dir={tmp_path / 'other'}", "policy.family=cnn"])
    assert code == 2 and not (tmp_path / "other").exists()


def test_a_sampler_kind_from_a_test_module_dreams_filters_and_trains_a_policy(smoke_run, tmp_path, capsys):
    """``generate.sampler.kind=constant`` (tests/linear_kind.py) with its own setting
    (``generate.sampler.constant.action``): every dreamed action is that action (noise 0), its label is every
    dream's provenance, the job id hashes the setting, and the dreams are filtered and mixed by config alone;
    a bad value of the kind's setting is refused before anything is written, naming it."""
    from dreamgen.data.store import TrajectoryStore

    run = smoke_run["run_dir"]
    common = ["experiment=smoke", f"run_dir={tmp_path / 'run'}", f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
              "progress=false", f"generate.world_model={run / 'world_model'}", f"world_model.store={run / 'real.zarr'}", "generate.workers=0", "generate.episodes=4",
              "dream.horizon=10", "generate.sampler.kind=constant", "generate.sampler.noise=0", *LOOSE]
    action = ["+generate.sampler.constant.action=[0.5,-0.25]"]
    with contextlib.chdir(tmp_path):
        code, err = in_process("generate", [*common, "+generate.sampler.constant.action=[2]",
                                            f"run_dir={tmp_path / 'bad'}"], capsys)
        assert code == 2 and "generate.sampler.constant.action=[2]; give a list of numbers in [-1, 1]" in err
        assert not (tmp_path / "bad").exists()
        code, err = in_process("generate", [*common, "+generate.sampler.constant.speed=1",
                                            f"run_dir={tmp_path / 'bad'}"], capsys)
        assert code == 2 and "the settings of sampler kind constant: action" in err
        for verb, extra in (("generate", action), ("train-quality", action), ("filter", action),
                            ("train-policy", [f"run_dir={tmp_path / 'mixed'}", f"policy.store={run / 'real.zarr'}",
                                              f"policy.dream_store={tmp_path / 'run' / 'dream.zarr'}",
                                              "policy.max_dream_fraction=0.5", "policy.epochs=2"])):
            code, err = in_process(verb, [*common, *extra], capsys)
            assert code == 0, f"{verb} exited {code}: {err[-2000:]}"

    store = TrajectoryStore.open(tmp_path / "run" / "dream.zarr")
    meta = store.meta(["sampler", "kind", "verdict", "task"])
    tasks, counts = np.unique(meta["task"], return_counts=True)
    assert len(tasks) == 2 and counts.tolist() == [4, 4] and set(meta["sampler"].tolist()) == {"constant(0.5,-0.25,noise=0)"}
    assert set(meta["kind"].tolist()) == {"constant"}
    for i in range(len(store)):
        actions = store.episode(i).action
        np.testing.assert_array_equal(actions, np.broadcast_to(np.float32([0.5, -0.25, 0, 0]), actions.shape))
    policy = json.loads((tmp_path / "mixed" / "policy" / "policy.json").read_text())["info"]
    assert policy["dream_selection"]["store_digest"] == store.digest()
    assert policy["dream_selection"]["episodes"] == int((meta["verdict"] == "accept").sum()) > 0

    from hydra import compose, initialize_config_dir

    from jobs.generate import sampler_spec
    from tests.conftest import REPO

    def spec(*overrides: str):
        with initialize_config_dir(config_dir=str(REPO / "configs"), version_base=None):
            return sampler_spec(compose(config_name="config", overrides=["generate.sampler.kind=constant", *overrides]))

    assert spec().options == (("action", [0.0]),) and spec().name == "constant(0,noise=0.1)"
    assert spec("+generate.sampler.constant.action=[1]").option("action") == [1]


def test_an_unknown_kind_is_refused_naming_every_kind():
    from dreamgen.world_model import kinds

    with pytest.raises(ConfigError, match=r"world_model.kind='transformer' is no world-model kind; the kinds: "
                                          r"ensemble \(.*\); latent \(.*\); linear"):
        kinds.get("transformer")
    with pytest.raises(ConfigError, match="the state model is `ensemble`"):
        kinds.get("state")
    from policies import families

    with pytest.raises(ConfigError, match=r"policy.family='cnn'; accepted: bc \(.*\), bc-image \(.*\), sb3 \(.*\), "
                                          r"mpc \(evaluate only\), random \(evaluate only: .*\), mean-action"):
        families.get("cnn")


def test_an_installed_kind_is_found_through_its_entry_point(monkeypatch):
    """A kind not imported here is looked up in the entry-point group ``dreamgen.world_models`` (how a Ray
    worker or the CLI finds an installed one); the lookup loads the named module, which registers it."""
    import importlib.metadata

    from dreamgen.world_model import kinds
    from tests.linear_kind import KIND

    loaded = []

    class Point:
        def load(self):  # what importing the installed module does
            loaded.append(True)
            kinds.register(dataclasses.replace(KIND, name="plugin-linear"))

    def entry_points(group):
        return [Point()] if group == "dreamgen.world_models" else []

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    try:
        assert kinds.get("plugin-linear").fit is KIND.fit and loaded == [True]
        assert kinds.get("plugin-linear") and loaded == [True]  # found now without loading again
        with pytest.raises(ValueError, match="a world-model kind named 'linear' is already registered"):
            kinds.register(dataclasses.replace(KIND))
    finally:
        kinds.KINDS.items.pop("plugin-linear", None)
