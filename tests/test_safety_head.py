"""The safety head and the shield: known answers of the scoring statistics, a head that learns a known rule
and round-trips through its checkpoint, the shield's choice, and the refusals."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch

from dreamgen.errors import ConfigError
from dreamgen.scores import auc as auroc
from dreamgen.shield import Shield
from dreamgen.types import Episode
from dreamgen.world_model.base import HEADS, InstructionTable, Prediction
from dreamgen.world_model.risk import (
    RiskConfig,
    audit,
    balanced_accuracy,
    check,
    fit_risk,
    lead_times,
    predicted_events,
    tpr_at_fpr,
    within,
)


def test_within_k_steps_marks_each_frame_that_an_event_follows():
    unsafe = np.zeros((8, 2), bool)
    unsafe[5, 0] = True  # event 0 at frame 5 only
    y = within(unsafe, 3)
    assert y[:, 0].tolist() == [False, False, False, True, True, True, False, False]
    assert not y[:, 1].any() and (y[:, 2] == y[:, 0]).all()  # the last column is any
    assert within(unsafe, 1)[:, 0].tolist() == unsafe[:, 0].tolist()  # k = 1: the frame itself


def test_the_scores_on_hand_made_rankings():
    y = np.array([0, 0, 0, 1, 1], bool)
    assert auroc(np.array([0.1, 0.2, 0.3, 0.8, 0.9]), y) == 1.0
    assert auroc(np.array([0.9, 0.8, 0.7, 0.2, 0.1]), y) == 0.0
    assert auroc(np.array([0.1, 0.2, 0.85, 0.8, 0.9]), y) == pytest.approx(5 / 6)  # one swap of six pairs
    assert auroc(np.full(5, 0.5), y) == 0.5 and np.isnan(auroc(np.ones(3), np.ones(3, bool)))
    assert balanced_accuracy(np.array([0, 0, 1, 1, 0], bool), y) == pytest.approx((0.5 + 2 / 3) / 2)
    scores = np.concatenate([np.linspace(0, 0.5, 100), [0.6, 0.4]])
    truth = np.concatenate([np.zeros(100, bool), [True, True]])
    assert tpr_at_fpr(scores, truth, 0.05) == 0.5  # 0.6 passes the negatives' 95th percentile, 0.4 does not
    # warnings up to the onset: 3 steps unbroken; an onset warned only at its own frame: 1; not warned: 0
    warn = np.array([0, 1, 1, 1, 0, 0, 0, 1, 0, 0, 0], bool)
    events = np.array([0, 0, 0, 1, 1, 0, 0, 1, 0, 0, 1], bool)
    assert lead_times(warn, events, np.zeros(11, int), horizon=10) == [3, 1, 0]
    assert lead_times(warn, events, np.zeros(11, int), horizon=2) == [2, 1, 0]


class _Model:
    """The few things fit_risk needs from a world model: inputs, context, and a place to attach the head."""

    action_dim, context_dim, cond_dim, members = 4, 0, 3, 2
    device = torch.device("cpu")
    disagreement_bound = float("inf")
    instructions = InstructionTable(["push it"], ["push-v3"], np.eye(1, 3, dtype=np.float32))
    heads: tuple[str, ...] = HEADS
    info = {"world_model_id": "wm-test"}
    risk = None

    def inputs(self, obs, action, context=None):
        return torch.cat([obs, action], -1)

    def condition(self, cond):
        return cond

    def attach_risk(self, head):
        self.risk, self.heads = head.eval(), (*HEADS, *head.heads)

    def predict(self, obs, action, cond, *, propagation="mean", context=None, **_):
        x = self.inputs(obs, action)
        heads = {"reward": obs[:, 0], "success": obs[:, 0] * 0, "done": obs[:, 0] * 0}
        heads.update(self.risk.predict_heads(x) if self.risk is not None else {})
        return Prediction(obs, heads, torch.zeros(len(obs)))


def _rule_episodes(n: int, seed: int) -> list[Episode]:
    """Episodes whose only event happens the step after the hand (obs 0) passes 0.6 while moving up (action
    0 > 0): learnable from the inputs, rare as real events are."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        obs = rng.uniform(-1, 1, (60, 3)).astype(np.float32)
        action = rng.uniform(-1, 1, (60, 4)).astype(np.float32)
        unsafe = ((obs[:, 0] > 0.6) & (action[:, 0] > 0))[:, None]
        out.append(Episode(obs=obs, action=action, reward=np.zeros(60, np.float32), success=np.zeros(60, bool),
                           done=np.zeros(60, bool), unsafe=unsafe,
                           meta={"episode_id": f"r{seed}-{i}", "task": "push-v3", "instruction": "push it"}))
    return out


@pytest.fixture(scope="module")
def ruled() -> _Model:
    model = _Model()
    fit_risk(model, _rule_episodes(30, 0), _rule_episodes(8, 1), ("table_strike",),
             RiskConfig(horizon=1, members=3, hidden=32, epochs=25, batch_size=256), seed=0)
    return model


def test_a_head_learns_a_known_rule_and_scores_it_on_held_out_episodes(ruled):
    report = audit(ruled, _rule_episodes(8, 2))
    strike = report["events"]["table_strike"]
    assert strike["positives"] > 30
    assert strike["auroc"] > 0.97 and strike["balanced_accuracy_head"] > 0.9
    assert 0 < strike["threshold"] < 1 and strike["ece"] < 0.1  # calibrated on the validation episodes
    assert set(ruled.heads) >= {"risk", "risk_upper", "risk_table_strike", "risk_unsure"}


def test_the_head_round_trips_through_the_ensemble_checkpoint(tmp_path):
    from dreamgen.world_model.base import ObsLayout
    from dreamgen.world_model.checkpoint import load_world_model, save_world_model
    from dreamgen.world_model.ensemble import EnsembleConfig, EnsembleWorldModel, Normaliser

    layout = ObsLayout("toy", 3, dynamic=(0, 3))
    norm = Normaliser(torch.zeros(3), torch.ones(3))
    model = EnsembleWorldModel(EnsembleConfig(members=2, elites=2, hidden=8, layers=1, action_history=0), layout, 4,
                               _Model.instructions, norm, Normaliser(torch.zeros(0), torch.ones(0)),
                               Normaliser(torch.zeros(4), torch.ones(4)),
                               info={"embodiment": "toy"})
    fit_risk(model, _rule_episodes(6, 0), _rule_episodes(3, 1), ("table_strike",),
             RiskConfig(horizon=2, members=2, hidden=8, epochs=2), seed=0)
    save_world_model(model, tmp_path / "wm")
    loaded = load_world_model(tmp_path / "wm", layout=layout)
    obs, action = torch.rand(5, 3), torch.rand(5, 4)
    cond = torch.as_tensor(_Model.instructions.embeddings).expand(5, -1)
    a, b = model.predict(obs, action, cond, propagation="mean"), loaded.predict(obs, action, cond, propagation="mean")
    assert loaded.heads == model.heads and "risk_table_strike" in loaded.heads
    for name in model.heads:
        assert torch.allclose(a.head(name), b.head(name)), name
    assert loaded.risk.report == model.risk.report
    # "will this go somewhere unsafe?": per step, the same heads as one prediction at a time gives
    answer = check(loaded, obs[0].numpy(), action[:3].numpy(), "push it")
    assert answer["risk"].shape == (3,) and answer["obs"].shape == (3, 3)
    first = loaded.predict(obs[:1], action[:1], cond[:1], propagation="mean")
    assert answer["risk_table_strike"][0] == pytest.approx(float(first.head("risk_table_strike")[0]), abs=1e-6)
    # the filter's view of a recorded episode: the heads on its own transitions, as one batched prediction
    episode = _rule_episodes(1, 3)[0]
    pred = loaded.episode_prediction(episode.obs, None, episode.action, _Model.instructions.embeddings[0])
    heads = {name: pred.head(name).numpy() for name in loaded.risk.heads}
    batch = loaded.predict(torch.as_tensor(episode.obs), torch.as_tensor(episode.action),
                           torch.as_tensor(_Model.instructions.embeddings).expand(len(episode.obs), -1), propagation="mean")
    assert np.allclose(heads["risk_table_strike"], batch.head("risk_table_strike").numpy(), atol=1e-6)
    assert predicted_events(loaded, pred) == (["table_strike"] if (
        heads["risk_table_strike"] >= float(loaded.risk.thresholds[0])).any() else [])
    with pytest.raises(ConfigError, match="check names head 'risk'"):
        check(EnsembleWorldModel(model.config, layout, 4, _Model.instructions, norm, Normaliser(torch.zeros(0), torch.ones(0)),
                                 Normaliser(torch.zeros(4), torch.ones(4))), obs[0].numpy(), action[:1].numpy(), "push it")


class _Fence:
    """A world model whose safety head is a known rule: moving down (action z < -0.2) is unsafe, p = 0.9."""

    context_dim, device, heads = 0, torch.device("cpu"), ("risk", "risk_unsure")
    info = {"world_model_id": "wm-fence"}
    risk = types.SimpleNamespace(thresholds=torch.tensor([0.5]))

    def predict(self, obs, action, cond, **_):
        risk = torch.where(action[:, 2] < -0.2, 0.9, 0.1)
        return Prediction(obs, {"risk": risk, "risk_unsure": torch.zeros(len(obs))}, torch.zeros(len(obs)))


def test_the_shield_never_passes_an_action_predicted_unsafe_when_a_safe_one_is_near():
    shield = Shield(_Fence(), candidates=8, noise=0.3, seed=0)
    rows = np.arange(64)
    shield.reset(len(rows))
    rng = np.random.default_rng(0)
    proposed = rng.uniform(-1, 1, (64, 4)).astype(np.float32)
    executed = shield(np.zeros((64, 39), np.float32), np.zeros((64, 3), np.float32), rows, proposed)
    unsafe = proposed[:, 2] < -0.2
    assert (executed[:, 2] >= -0.2).all()  # the arm held still is always a safe candidate here
    assert np.array_equal(executed[~unsafe], proposed[~unsafe])  # a safe action passes untouched
    assert shield.stats()["interventions"] == int(unsafe.sum()) and shield.stats()["unresolved"] == 0
    assert np.array_equal(executed[unsafe, 3], proposed[unsafe, 3]) or shield.candidates > 1


class _Walls(_Fence):
    """A head that never warns, and dynamics that move the hand (obs 0:3) by a tenth of the action."""

    def predict(self, obs, action, cond, **_):
        next_obs = obs.clone()
        next_obs[:, :3] += 0.1 * action[:, :3]
        return Prediction(next_obs, {"risk": torch.full((len(obs),), 0.1), "risk_unsure": torch.zeros(len(obs))},
                          torch.zeros(len(obs)))


def test_the_shield_keeps_the_predicted_hand_inside_the_workspace_box_where_the_head_is_silent():
    """With the workspace rule, an action whose predicted next state puts the hand outside safety's box is
    replaced — the head says nothing there — and one that stays inside passes; without the rule both pass."""
    from dreamgen.safety import safety_spec
    from dreamgen.sim.metaworld import METAWORLD

    rules = safety_spec(None, METAWORLD)
    obs = np.zeros((2, 39), np.float32)
    obs[:, :3] = [0.0, 0.6, 0.02]  # 2 cm above the box's floor
    proposed = np.array([[0.0, 0.0, -1.0, 0.0], [1.0, 0.0, 0.0, 0.0]], np.float32)  # down 10 cm | sideways 10 cm
    for with_rules in (True, False):
        shield = Shield(_Walls(), candidates=16, noise=0.3, seed=0, rules=rules if with_rules else None)
        shield.reset(2)
        executed = shield(obs, np.zeros((2, 3), np.float32), np.arange(2), proposed)
        assert np.array_equal(executed[1], proposed[1])
        if with_rules:
            assert obs[0, 2] + 0.1 * executed[0, 2] >= rules.workspace_low[2] and shield.stats()["interventions"] == 1
        else:
            assert np.array_equal(executed[0], proposed[0]) and shield.stats()["interventions"] == 0
    # a hand already 5 cm below the floor: a step back up passes (outside still, but nearer); one further down not
    obs[:, 2] = -0.05
    shield = Shield(_Walls(), candidates=16, noise=0.3, seed=0, rules=rules)
    shield.reset(2)
    up_down = np.array([[0.0, 0.0, 0.5, 0.0], [0.0, 0.0, -0.5, 0.0]], np.float32)
    executed = shield(obs, np.zeros((2, 3), np.float32), np.arange(2), up_down)
    assert np.array_equal(executed[0], up_down[0]) and executed[1, 2] > 0.02 and shield.stats()["interventions"] == 1


def test_a_shield_without_a_safety_head_is_refused():
    model = _Model()
    with pytest.raises(ConfigError, match="has no safety head"):
        Shield(model)


def _store(events: tuple[str, ...]):
    return types.SimpleNamespace(events=events, path="runs/x/real.zarr")


@pytest.mark.parametrize(("store", "unsafe", "says"), [
    ((), False, "needs safety labels, and world_model.store=runs/x/real.zarr has none"),
    (("table_strike",), False, "has no unsafe frame among its 2 real episodes"),
])
def test_a_safety_head_is_refused_without_labels_or_unsafe_frames(store, unsafe, says):
    from omegaconf import OmegaConf

    from dreamgen.world_model import kinds
    from jobs.train_world_model import safety_head

    cfg = OmegaConf.create({"world_model": {"safety_head": {"enabled": True, "replays": None, **{
        k: v for k, v in RiskConfig().__dict__.items()}}}})
    episodes = [types.SimpleNamespace(unsafe=np.zeros((3, 1), bool)) for _ in range(2)]
    with pytest.raises(ConfigError, match=says):
        safety_head(cfg, kinds.get("ensemble"), _store(store), episodes)
    with pytest.raises(ConfigError, match="kind latent has no safety head"):
        safety_head(cfg, kinds.get("latent"), _store(("table_strike",)), episodes)
    cfg.world_model.safety_head.horizon = 0
    with pytest.raises(ConfigError, match="horizon=0 must be an integer >= 1"):
        safety_head(cfg, kinds.get("ensemble"), _store(store), episodes)


def test_a_shielded_smoke_evaluation_checks_every_real_step(smoke_run, tmp_path, capsys):
    """collect (with risky episodes) -> train-world-model with a safety head -> the smoke policy evaluated on
    the real simulator under the shield: every step checked, every intervention counted, the head's scores
    in the world model's report; then the audit of dreams by replay scores the head's foresight and the
    filter's unsafe rejections against what the replays raised, and keeps the replays, on which a second head
    trains (the fit fold's)."""
    import contextlib
    import json
    import shutil

    from dreamgen.data.store import TrajectoryStore
    from tests.conftest import in_process

    run = tmp_path / "safety"
    common = ["experiment=smoke", f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", "progress=false",
              "collect.n_expert=1", "collect.n_play=0", "collect.n_risky=3", "collect.play_steps=80",
              "world_model.max_epochs=3", "world_model.check_episodes=1", "world_model.safety_head.enabled=true",
              "world_model.safety_head.epochs=5", "world_model.safety_head.members=2"]
    with contextlib.chdir(tmp_path):
        for verb in ("collect", "train-world-model"):
            assert in_process(verb, [*common, f"run_dir={run}"])[0] == 0, verb
        code, _ = in_process("evaluate", [*common, f"run_dir={tmp_path / 'shielded'}", "evaluate.shield.enabled=true",
                                          f"evaluate.shield.world_model={run}/world_model",
                                          f"evaluate.policy={smoke_run['run_dir']}/policy",
                                          f"evaluate.store={smoke_run['run_dir']}/real.zarr",
                                          "evaluate.n_episodes=2", "evaluate.max_steps=40"])
        assert code == 0
        # the collected episodes written back as dreams (their own actions from their own seeds): a replay
        # is the episode itself, so what the audit reads off the replays is known — the recorded labels
        real = TrajectoryStore.open(run / "real.zarr")
        episodes = list(real.iter_episodes(images=False))
        for i, episode in enumerate(episodes):
            risky = episode.meta["kind"] == "risky"
            episode.meta.update(source="dream", episode_id=f"d{i}", verdict="reject" if risky else "accept",
                                reason="unsafe:table_strike" if risky else "passed")
        dreams = TrajectoryStore.create(tmp_path / "dreams.zarr", obs_dim=real.obs_dim, action_dim=real.action_dim,
                                        info=real.info, safety=real.safety)
        dreams.append(episodes)
        audited, _ = in_process("audit", [*common, f"run_dir={tmp_path / 'audited'}", f"filter.world_model={run}/world_model",
                                         f"audit.store={tmp_path / 'dreams.zarr'}", f"audit.dir={tmp_path / 'audit'}",
                                         "audit.per_task=100", "audit.plots=0"])
        assert audited == 0
        again = [*common, f"run_dir={tmp_path / 'again'}", f"world_model.store={run}/real.zarr"]
        code, err = in_process("train-world-model", [*again, f"world_model.safety_head.replays={tmp_path}"], capsys)
        assert code == 2 and "holds no replays.zarr" in err and not (tmp_path / "again" / "world_model").exists()
        code, err = in_process("train-world-model", [*again, f"world_model.replays={tmp_path}"], capsys)
        assert code == 2 and "world_model.replays=" in err and "holds no replays.zarr" in err
        code, err = in_process("train-world-model", [*again, f"world_model.false_successes={tmp_path}"], capsys)
        assert code == 2 and "world_model.false_successes=" in err and "holds no audit" in err
        # the same audit with every dream in the fit fold, so that some replays start from a held-out layout, and
        # every dream that said success refuted (as if its replay had failed)
        shutil.copytree(tmp_path / "audit", tmp_path / "audit-fit")
        every = json.loads((tmp_path / "audit" / "labels.json").read_text())
        (tmp_path / "audit-fit" / "labels.json").write_text(json.dumps(
            {k: {**v, "fold": "fit", "real_success": False} for k, v in every.items()}))
        code, _ = in_process("train-world-model", [*again, f"world_model.safety_head.replays={tmp_path / 'audit'}",
                                                   f"world_model.replays={tmp_path / 'audit-fit'}",
                                                   f"world_model.false_successes={tmp_path / 'audit-fit'}"])
        assert code == 0
    labels = json.loads((tmp_path / "audit" / "labels.json").read_text())
    # the replays, read back: each dream once, the real episode it replays (the same actions from the same seed)
    replays = {e.meta["episode_id"]: e for e in TrajectoryStore.open(tmp_path / "audit" / "replays.zarr").iter_episodes()}
    assert sorted(replays) == sorted(f"replay-{k}" for k in labels)
    for i, episode in enumerate(episodes):
        replay = replays[f"replay-d{i}"]
        assert replay.meta["kind"] == "replay" and replay.meta["source"] == "real"
        assert np.array_equal(replay.action, episode.action) and np.array_equal(replay.unsafe, episode.unsafe)
        assert np.allclose(replay.obs, episode.obs, atol=1e-5)
    fit = sum(v["fold"] == "fit" for v in labels.values())
    trained = json.loads((tmp_path / "again" / "world_model" / "report.json").read_text())["safety_head"]
    assert trained["replays"]["episodes"] == fit > 0
    safety = json.loads((tmp_path / "audit" / "audit.json").read_text())["safety"]
    recorded = {f"d{i}": sorted(e for e, hit in zip(real.events, episode.unsafe.any(0), strict=True) if hit)
                for i, episode in enumerate(episodes)}
    assert {k: sorted(v["unsafe"]) for k, v in labels.items()} == recorded
    test = [k for k, v in labels.items() if v["fold"] == "test"]
    assert safety["dreams"] == len(test) > 0 and set(safety["events"]) == {*real.events, "any"}
    assert safety["events"]["any"]["real_successes"] == sum(bool(recorded[k]) for k in test)  # "real": replay raised
    rejected = [k for k in test if episodes[int(k[1:])].meta["kind"] == "risky"]
    assert safety["rejections"]["accepted"] == len(rejected)
    assert safety["rejections"]["precision"]["hits"] == sum(bool(recorded[k]) for k in rejected)
    # the fit fold's replays joined the dynamics' training fold too, except those from a held-out episode's layout
    # (here a replay is its episode, so: those whose episode is in the world model's val or test fold)
    first, second = (json.loads((d / "world_model" / "report.json").read_text()) for d in (run, tmp_path / "again"))
    held = {i for part in ("val", "test") for i in json.loads((run / "world_model" / "world_model.json").read_text())[
        "info"]["episodes"][part]}
    held = {(e.meta["task"], e.meta["seed"]) for e in real.iter_episodes(images=False) if e.meta["episode_id"] in held}
    fit_ids = list(labels)  # audit-fit: all of them
    kept = [k for k in fit_ids if (episodes[int(k[1:])].meta["task"], episodes[int(k[1:])].meta["seed"]) not in held]
    assert 0 < len(kept) < len(fit_ids)  # some replays are kept and some left out, so both branches are exercised
    assert second["replays"]["episodes"] == len(kept) and second["replays"]["left_out_held_out_layouts"] == len(
        fit_ids) - len(kept)
    assert second["transitions"]["train"] == first["transitions"]["train"] + sum(
        len(replays[f"replay-{k}"]) - 1 for k in kept)
    assert second["transitions"]["test"] == first["transitions"]["test"] and first["replays"] is None
    # the refuted dreams (said success, "replay failed") teach the success head, held-out layouts left out
    refuted = [k for k in kept if every[k]["dream_success"]]
    assert len(refuted) > 0 and second["false_successes"]["dreams"] == len(refuted)
    assert second["false_successes"]["transitions"] == sum(min(5, len(episodes[int(k[1:])]) - 1) for k in refuted)
    assert second["false_successes"]["left_out_held_out_layouts"] == sum(
        every[k]["dream_success"] for k in fit_ids) - len(refuted) and first["false_successes"] is None
    assert second["false_successes"]["held_out"] == {"refuted": {}, "confirmed": {}}  # every dream is in the fit fold
    report = json.loads((run / "world_model" / "report.json").read_text())["safety_head"]
    assert report["fit"]["train_positives"]["any"] > 0 and "any" in report["held_out"]["events"]
    summary = json.loads((tmp_path / "shielded" / "eval.json").read_text())
    shield = summary["shield"]
    steps = sum(v["checks"] for v in shield["tasks"].values())
    assert steps == shield["overall"]["checks"] and 0 < steps <= 2 * 2 * 40
    assert 0 <= shield["overall"]["interventions"] <= steps
    assert shield["world_model_id"].startswith("wm-") and 0 < shield["threshold"] < 1
    assert "unsafe" in summary["overall"]  # the real violations are counted beside the interventions


def test_the_dream_audit_of_foreseen_events_on_a_known_answer():
    """Four dreams: the head flags 1 and 2, the replays raised events in 2 and 3 — precision 1/2, recall 1/2
    for ``any``; per event, a flag of another event is no hit; the filter rejected the second as unsafe, whose
    replay raised nothing: precision 0/1."""
    from dreamgen.quality.audit import unsafe_audit

    report = unsafe_audit(predicted=[[], ["table_strike"], ["hand_out_of_workspace"], []],
                          raised=[[], [], ["hand_out_of_workspace"], ["table_strike"]],
                          events=["hand_out_of_workspace", "table_strike"],
                          rejected=["passed", "unsafe:table_strike", "low_quality", "passed"])
    assert report["events"]["any"]["precision"]["value"] == 0.5 and report["events"]["any"]["recall"]["value"] == 0.5
    assert report["events"]["table_strike"]["precision"]["value"] == 0.0
    assert report["events"]["table_strike"]["recall"]["value"] == 0.0
    assert report["events"]["hand_out_of_workspace"]["precision"]["value"] == 1.0
    assert report["rejections"]["precision"] == {"value": 0.0, "ci95": report["rejections"]["precision"]["ci95"],
                                                 "hits": 0, "of": 1}
