"""The ensemble world model: learns known dynamics, keeps the layout's structure, round-trips through
safetensors + JSON with a stable id, and refuses checkpoints/instructions it cannot serve."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dreamgen.errors import InstructionError
from dreamgen.sim.metaworld import METAWORLD_LAYOUT
from dreamgen.types import Episode
from dreamgen.world_model import ensemble
from dreamgen.world_model.base import ONE_MEMBER, InstructionTable, ObsLayout, WorldModel
from dreamgen.world_model.checkpoint import CheckpointError, load_world_model, save_world_model
from dreamgen.world_model.ensemble import ACTIVATIONS, EnsembleConfig, EnsembleMLP
from dreamgen.world_model.fit import fit_ensemble, split_episodes, transitions
from dreamgen.world_model.metrics import fidelity_report

LAYOUT = ObsLayout("toy", 5, dynamic=(0, 2), history=(2, 4), static=(4, 5))
TABLE = InstructionTable(["left", "right"], ["t-left", "t-right"], np.eye(2, 8, dtype=np.float32))
CONFIG = EnsembleConfig(members=3, elites=2, hidden=64, layers=2, lr=3e-3, batch_size=128, max_epochs=40,
                        patience=40, action_history=0)


def _episodes(n, rng, length=30):
    """s' = s + 0.1 a (+ the instruction's drift), reward = -|s'|, success once s'_0 > 1."""
    episodes = []
    for i in range(n):
        text = TABLE.texts[i % 2]
        drift = 0.05 if text == "right" else -0.05
        obs = np.zeros((length, 5), np.float32)
        obs[0, :2] = rng.uniform(-0.5, 0.5, 2)
        obs[0, 2:4] = obs[0, :2]
        obs[:, 4] = rng.uniform(-1, 1)  # a static "goal"
        action = rng.uniform(-1, 1, (length, 2)).astype(np.float32)
        for t in range(length - 1):
            obs[t + 1, 2:4] = obs[t, :2]
            obs[t + 1, :2] = obs[t, :2] + 0.1 * action[t] + drift
        nxt = np.vstack([obs[1:, :2], obs[-1:, :2]])
        episodes.append(Episode(obs, action, -np.abs(nxt).sum(1).astype(np.float32), nxt[:, 0] > 1.0,
                                np.zeros(length, bool), {"instruction": text, "task": TABLE.tasks[i % 2],
                                                         "episode_id": f"e{i}"}))
    return episodes


@pytest.fixture(scope="module")
def trained():
    rng = np.random.default_rng(0)
    episodes = _episodes(40, rng)
    train, val, test = split_episodes([e.meta["task"] for e in episodes], (0.1, 0.1), np.random.default_rng(1))
    data = {k: transitions([episodes[i] for i in idx], LAYOUT, TABLE) for k, idx in
            (("train", train), ("val", val), ("test", test))}
    model = fit_ensemble(data["train"], data["val"], TABLE, LAYOUT, CONFIG, seed=0)
    return model, [episodes[i] for i in test], data


def test_split_is_by_episode_and_stratified():
    tasks = ["a"] * 10 + ["b"] * 5
    train, val, test = split_episodes(tasks, (0.1, 0.2), np.random.default_rng(0))
    assert sorted([*train, *val, *test]) == list(range(15))
    assert {tasks[i] for i in val} == {"a", "b"} and {tasks[i] for i in test} == {"a", "b"}


def test_learns_known_dynamics_and_beats_the_copy_baseline(trained):
    model, test, data = trained
    assert isinstance(model, WorldModel) and model.members == 2
    report = fidelity_report(model, test, data["test"], horizons=(5,), parts={"point": slice(0, 2), "goal": slice(4, 5)})
    assert set(report["open_loop"]["5"]) == {"starts", "point_mm", "point_copy_mm"}  # the static goal is not predicted
    assert report["one_step"]["nmse"] < 0.1 * report["one_step"]["copy_nmse"], report
    # the instruction matters: the same state/action under "right" drifts right of "left"
    obs = torch.zeros(2, 5)
    cond = model.condition(torch.as_tensor(TABLE.embeddings))
    pred = model.predict(obs, torch.zeros(2, 2), cond, propagation="mean")
    assert pred.next_obs[1, 0] - pred.next_obs[0, 0] > 0.05
    # structure is exact: history gets the old dynamic dims, static dims are carried over
    obs = torch.randn(4, 5)
    pred = model.predict(obs, torch.zeros(4, 2), model.condition(torch.as_tensor(TABLE.embeddings[[0, 1, 0, 1]])))
    assert torch.equal(pred.next_obs[:, 2:4], obs[:, :2]) and torch.equal(pred.next_obs[:, 4], obs[:, 4])
    assert (pred.disagreement >= 0).all() and ((pred.head("success") >= 0) & (pred.head("success") <= 1)).all()


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_inference_forward_equals_the_training_forward(activation, monkeypatch):
    """Prediction's shortcuts (a shared input, in-place activations, row blocks, a column subset) compute
    exactly what the autograd path that training uses computes."""
    monkeypatch.setattr(ensemble, "_BLOCK", 16)  # 50 rows -> 4 blocks, the last one short
    torch.manual_seed(0)
    net = EnsembleMLP(members=3, in_dim=6, cond_dim=4, hidden=32, layers=3, out_dim=9, activation=activation,
                      n_gauss=3)
    x, cond = torch.randn(50, 6), torch.randn(50, 4)
    cols = torch.tensor([0, 2, 7, 8])
    trained = net(x.expand(3, 50, 6), net.condition(cond))  # grad enabled: the training path
    assert trained.requires_grad
    with torch.no_grad():
        shared = net(x, net.condition(cond), cols)
        whole = net(x, net.condition(cond))
    torch.testing.assert_close(shared, trained[..., cols].detach())
    torch.testing.assert_close(whole, trained.detach())


def test_predictions_stay_in_the_training_range_of_each_dynamic_dim(trained):
    """A prediction is clamped into the training range of each dynamic dim — or, for a row already outside
    it (a real start the training episodes never reached), no further out than the row is: such a row is
    never snapped back to the range's edge (on Meta-World that was a 7 cm jump of the hand in one step)."""
    model = trained[0]
    low, high = model.bounds
    g = torch.Generator().manual_seed(0)  # its own draws: the answer must not depend on which tests ran first
    obs = 10 * torch.randn(256, 5, generator=g)  # far outside what it was trained on
    action = torch.rand(256, 2, generator=g) * 2 - 1
    obs[:128, slice(*model.layout.dynamic)] = low + (high - low) * (0.1 + 0.8 * torch.rand(128, len(low), generator=g))
    obs[128:, 0] = low[0] - 1 - torch.rand(128, generator=g)  # these outside, below the range
    cond = model.condition(torch.as_tensor(TABLE.embeddings[np.arange(256) % 2]))
    now = obs[:, slice(*model.layout.dynamic)]
    nxt = model.predict(obs, action, cond, propagation="mean").next_obs[:, slice(*model.layout.dynamic)]
    model.bounds = None
    try:
        raw = model.predict(obs, action, cond, propagation="mean").next_obs[:, slice(*model.layout.dynamic)]
    finally:
        model.bounds = (low, high)
    inside = ((now >= low) & (now <= high)).all(1)
    assert inside[:128].all() and not inside[128:].any()
    # the known answer: the unclamped prediction clamped into [min(low, now), max(high, now)], exactly
    torch.testing.assert_close(nxt, torch.clamp(raw, torch.minimum(low, now), torch.maximum(high, now)), rtol=0, atol=0)
    assert ((raw < low) | (raw > high))[inside].any()  # the clamp engaged where the row was inside
    below = now < low
    assert (nxt[below] < low.expand_as(now)[below]).any()  # not snapped to the edge


def test_a_dim_that_never_changes_in_the_training_data_is_predicted_unchanged(tmp_path):
    """An object's orientation that no training episode turns (constant within each episode, different
    across them) is carried over exactly — the model invents no rotation, in range or far outside it, and
    its one-step error there is the copy baseline's (0). Through save/load it stays so."""
    layout = ObsLayout("toy-still", 7, dynamic=(0, 3), history=(3, 6), static=(6, 7))
    rng = np.random.default_rng(0)
    episodes = []
    for e in _episodes(16, rng, length=20):
        obs = np.zeros((len(e), 7), np.float32)
        obs[:, :2], obs[:, 2], obs[:, 3:5], obs[:, 6] = e.obs[:, :2], rng.uniform(-1, 1), e.obs[:, 2:4], e.obs[:, 4]
        obs[:, 5] = obs[:, 2]
        episodes.append(Episode(obs, e.action, e.reward, e.success, e.done, e.meta))
    data = transitions(episodes, layout, TABLE)
    config = EnsembleConfig(members=2, elites=2, hidden=32, layers=2, batch_size=64, max_epochs=3, patience=3,
                            action_history=0)
    model = fit_ensemble(data, data, TABLE, layout, config, seed=0)
    obs = torch.cat([torch.as_tensor(data.obs[:32]), 10 * torch.randn(32, 7)])
    cond = model.condition(torch.as_tensor(TABLE.embeddings[np.arange(64) % 2]))
    save_world_model(model, tmp_path / "wm")
    loaded = load_world_model(tmp_path / "wm")
    for propagation, which in (("mean", model), ("random", model), ("mean", loaded)):
        pred = which.predict(obs, torch.rand(64, 2) * 2 - 1, cond, propagation=propagation,
                             generator=torch.Generator().manual_seed(0))
        assert torch.equal(pred.next_obs[:, 2], obs[:, 2])
        assert not torch.equal(pred.next_obs[:, :2], obs[:, :2])  # the moving dims move
    from dreamgen.world_model.metrics import one_step_nmse

    nmse = one_step_nmse(model, data)
    assert nmse["dims"] == 3 and np.isfinite(nmse["nmse"])


def test_propagation_modes(trained, monkeypatch):
    model = trained[0]
    monkeypatch.setattr(model, "bounds", None)  # clamping is its own step (above); the mean of members is linear
    obs, action = torch.randn(64, 5), torch.rand(64, 2) * 2 - 1
    cond = model.condition(torch.as_tensor(TABLE.embeddings[np.arange(64) % 2]))
    mean = model.predict(obs, action, cond, propagation="mean").next_obs
    each = [model.predict(obs, action, cond, propagation="fixed", members=torch.full((64,), k)).next_obs
            for k in range(model.members)]
    torch.testing.assert_close(torch.stack(each).mean(0), mean)
    gen = torch.Generator().manual_seed(0)
    rand = model.predict(obs, action, cond, propagation="random", generator=gen).next_obs
    picked = [min(range(model.members), key=lambda k: float((each[k][i] - rand[i]).abs().sum())) for i in range(64)]
    assert len(set(picked)) == model.members  # rows really come from different members
    with pytest.raises(ValueError, match="propagation"):
        model.predict(obs, action, cond, propagation="median")

    # one member per row (planning): each row computed by its own member alone gives that member's prediction
    members = torch.as_tensor(np.random.default_rng(0).integers(0, model.members, 64))
    own = model.predict(obs, action, cond, propagation=ONE_MEMBER, members=members)
    fixed = model.predict(obs, action, cond, propagation="fixed", members=members)
    torch.testing.assert_close(own.next_obs, fixed.next_obs)
    torch.testing.assert_close(own.head("reward"), fixed.head("reward"))
    assert torch.isnan(own.disagreement).all()  # no spread without the other members: never a silent 0
    lone = model.predict(obs[:1], action[:1], cond[:, :1], propagation=ONE_MEMBER, members=members[:1])
    torch.testing.assert_close(lone.next_obs, own.next_obs[:1])  # uneven groups (here 1 and 0 rows)


def test_checkpoint_round_trip_is_exact_with_a_stable_id(trained, tmp_path):
    model = trained[0]
    first = save_world_model(model, tmp_path / "a")
    loaded = load_world_model(tmp_path / "a")
    assert save_world_model(loaded, tmp_path / "b") == first == loaded.info["world_model_id"]
    assert first.startswith("wm-")
    obs, action = torch.randn(8, 5), torch.zeros(8, 2)
    emb = torch.as_tensor(TABLE.embeddings[[0] * 8])
    a = model.predict(obs, action, model.condition(emb), propagation="mean")
    b = loaded.predict(obs, action, loaded.condition(emb), propagation="mean")
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y)
    assert loaded.disagreement_bound == model.disagreement_bound and loaded.instructions.texts == TABLE.texts
    assert not any(p.suffix in (".pt", ".pkl", ".bin") for p in (tmp_path / "a").iterdir())


def test_bad_checkpoints_and_instructions_are_refused(trained, tmp_path):
    model = trained[0]
    save_world_model(model, tmp_path / "wm")
    with pytest.raises(CheckpointError, match="layout 'toy'.*needs 'metaworld-v3-state'"):
        load_world_model(tmp_path / "wm", layout=METAWORLD_LAYOUT)
    with pytest.raises(CheckpointError, match="not a world-model checkpoint"):
        load_world_model(tmp_path / "missing")
    meta = json.loads((tmp_path / "wm" / "world_model.json").read_text())
    # an edited checkpoint is refused (its id is recomputed from the content), never loaded under its old id
    for edit in ({"version": 99}, {"disagreement_bound": meta["disagreement_bound"] * 2},
                 {"world_model_id": "wm-000000000000"}):
        (tmp_path / "wm" / "world_model.json").write_text(json.dumps({**meta, **edit}))
        with pytest.raises(CheckpointError, match="changed after|was edited"):
            load_world_model(tmp_path / "wm")
    legacy = {k: v for k, v in meta.items() if k != "content_sha256"}  # written before content_sha256: id checked
    (tmp_path / "wm" / "world_model.json").write_text(json.dumps(legacy))
    assert load_world_model(tmp_path / "wm").info["world_model_id"] == meta["world_model_id"]
    (tmp_path / "wm" / "world_model.json").write_text(json.dumps({**legacy, "members": 1}))
    with pytest.raises(CheckpointError, match="no content_sha256"):
        load_world_model(tmp_path / "wm")
    from dreamgen.checkpoints import write_checkpoint  # a well-formed checkpoint of a version this code cannot read
    unnamed = {k: v for k, v in legacy.items() if k != "world_model_id"}
    write_checkpoint(tmp_path / "v99", {"x": torch.zeros(1)}, {**unnamed, "version": 99}, "world_model.json",
                     named=lambda digest: {"world_model_id": f"wm-{digest[:12]}"})
    with pytest.raises(CheckpointError, match="version 99"):
        load_world_model(tmp_path / "v99")
    (tmp_path / "wm" / "model.safetensors").write_bytes(b"\x00" * 16)
    (tmp_path / "wm" / "world_model.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="unreadable"):
        load_world_model(tmp_path / "wm")
    (tmp_path / "wm" / "world_model.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_world_model(tmp_path / "wm")
    with pytest.raises(InstructionError, match="'up' is not in the world model's table.*'left' \\(t-left\\)"):
        TABLE.lookup(["left", "up"])
    with pytest.raises(InstructionError, match="not trained on task 'reach-v3'"):
        TABLE.for_task("reach-v3")


def test_action_context_is_the_previous_actions_newest_first_and_shifts_by_one():
    from dreamgen.world_model.base import action_context, next_context

    actions = np.arange(8, dtype=np.float32).reshape(4, 2)  # a0=(0,1) a1=(2,3) a2=(4,5) a3=(6,7)
    ctx = action_context(actions, 2)
    np.testing.assert_array_equal(ctx, [[0, 0, 0, 0], [0, 1, 0, 0], [2, 3, 0, 1], [4, 5, 2, 3]])
    np.testing.assert_array_equal(next_context(ctx[2:3], actions[2:3]), ctx[3:4])
    assert action_context(actions, 0).shape == (4, 0) and next_context(ctx[:, :0], actions).shape == (4, 0)


def test_a_contact_gate_keeps_a_resting_object_still_and_moves_a_pushed_one(tmp_path):
    """Toy contact: an "object" (dim 2) moves by +0.04 a step only while the point is right of 0 (pushing it);
    else it stays. With the gate on it, the contact head separates the two and a row that does not push leaves
    the object exactly where it is, while one that pushes moves it by about the real amount; the gate and the
    head survive save/load."""
    layout = ObsLayout("toy-contact", 7, dynamic=(0, 3), history=(3, 6), static=(6, 7))
    rng = np.random.default_rng(0)
    episodes = []
    for i in range(40):
        obs = np.zeros((30, 7), np.float32)
        obs[0, :2], obs[0, 2] = rng.uniform(-0.5, 0.5, 2), rng.uniform(-1, 1)
        action = rng.uniform(-1, 1, (30, 2)).astype(np.float32)
        for t in range(29):
            obs[t + 1, :2] = np.clip(obs[t, :2] + 0.1 * action[t], -1, 1)
            obs[t + 1, 2] = obs[t, 2] + (0.04 if obs[t, 0] > 0 else 0.0)
            obs[t + 1, 3:6] = obs[t, :3]
        episodes.append(Episode(obs, action, np.zeros(30, np.float32), np.zeros(30, bool), np.zeros(30, bool),
                                {"instruction": TABLE.texts[i % 2], "task": TABLE.tasks[i % 2], "episode_id": f"e{i}"}))
    data = transitions(episodes, layout, TABLE)
    config = EnsembleConfig(members=2, elites=2, hidden=64, layers=2, lr=3e-3, batch_size=128, max_epochs=30,
                            patience=30, action_history=0, gate=(2, 3), gate_mm=1.0)
    model = fit_ensemble(data, data, TABLE, layout, config, seed=0)
    assert model.heads == ("reward", "success", "done", "success_lower", "contact")
    save_world_model(model, tmp_path / "wm")
    loaded = load_world_model(tmp_path / "wm")
    obs = np.zeros((64, 7), np.float32)
    obs[:32, 0], obs[32:, 0] = rng.uniform(-0.8, -0.2, 32), rng.uniform(0.2, 0.8, 32)  # resting | pushing
    obs[:, 1], obs[:, 2] = rng.uniform(-0.5, 0.5, 64), rng.uniform(-1, 1, 64)
    obs[:, 3:6] = obs[:, :3]
    for which in (model, loaded):
        pred = which.predict(torch.as_tensor(obs), torch.zeros(64, 2), which.condition(
            torch.as_tensor(TABLE.embeddings[np.arange(64) % 2])), propagation="mean")
        moved = (pred.next_obs[:, 2] - torch.as_tensor(obs[:, 2])).numpy()
        contact = pred.head("contact").numpy()
        assert (contact[:32] < 0.5).all() and (contact[32:] >= 0.5).all(), contact
        assert (moved[:32] == 0).all()  # exactly still
        assert np.abs(moved[32:] - 0.04).max() < 0.01, moved[32:]
    # disagreement counts the gated dim as each member predicts it: on a resting row every member says "no
    # contact", so the object's untrained raw Δ has no say — exactly the disagreement with that dim left out
    assert loaded.gated_disagreement and json.loads((tmp_path / "wm" / "world_model.json").read_text())[
        "disagreement"] == "gated"
    raw = load_world_model(tmp_path / "wm")
    raw.gated_disagreement, raw._moves = False, raw._moves * torch.tensor([1.0, 1.0, 0.0])
    cond = loaded.condition(torch.as_tensor(TABLE.embeddings[np.arange(64) % 2]))
    gated_d = loaded.predict(torch.as_tensor(obs), torch.zeros(64, 2), cond, propagation="mean").disagreement
    without = raw.predict(torch.as_tensor(obs), torch.zeros(64, 2), cond, propagation="mean").disagreement
    torch.testing.assert_close(gated_d[:32], without[:32], rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="gate"):
        EnsembleConfig(gate=(3, 2))


def test_calibration_known_answers():
    """ECE is 0 for a predictor whose every bin's mean prediction is its outcome frequency, |p - f| for a
    constant one; precision and recall at 0.5 count the real outcomes where success was predicted."""
    from dreamgen.world_model.metrics import calibration

    # bin [0.2, 0.3): 100 predictions of 0.25, 25 real; bin [0.7, 0.8): 100 of 0.75, 75 real
    prob = np.r_[np.full(100, 0.25), np.full(100, 0.75)]
    outcome = np.r_[np.arange(100) < 25, np.arange(100) < 75]
    calibrated = calibration(prob, outcome)
    assert calibrated["ece"] == pytest.approx(0.0, abs=1e-12)
    assert calibrated["precision"] == pytest.approx(0.75) and calibrated["recall"] == pytest.approx(75 / 100)
    assert [b["count"] for b in calibrated["bins"]] == [100, 100]
    constant = calibration(np.full(200, 0.9), np.arange(200) < 60)  # says 0.9, is 0.3
    assert constant["ece"] == pytest.approx(0.6) and constant["precision"] == pytest.approx(0.3)
    assert constant["brier"] == pytest.approx(0.3 * 0.1 ** 2 + 0.7 * 0.9 ** 2)
    never = calibration(np.zeros(10), np.zeros(10, bool))
    assert never["ece"] == 0.0 and np.isnan(never["precision"]) and np.isnan(never["recall"])
    with pytest.raises(ValueError, match="same 1-d shape"):
        calibration(np.zeros(3), np.zeros(4, bool))


def test_the_fidelity_report_calibrates_every_success_head_and_the_lower_one_is_the_least_member(trained):
    from dreamgen.world_model.metrics import head_calibration

    model, _, data = trained
    report = head_calibration(model, data["test"])
    assert set(report) == {"success", "success_lower"} and report["success"]["n"] == len(data["test"])
    obs = torch.as_tensor(data["test"].obs)
    cond = model.condition(torch.as_tensor(TABLE.embeddings[data["test"].instruction]))
    pred = model.predict(obs, torch.as_tensor(data["test"].action), cond, propagation="mean",
                         context=torch.as_tensor(data["test"].context))
    assert (pred.head("success_lower") <= pred.head("success") + 1e-6).all()
    assert report["success_lower"]["predicted"] <= report["success"]["predicted"]


def test_refuted_dreams_teach_the_success_head_only_their_last_steps(trained):
    """``false_successes``: each dream's last ``steps`` transitions (fewer if it is shorter), with the dream's own
    previous actions, labelled "not a success" and head-only (``real`` 0). In the loss, all-real rows give exactly
    the loss without a mask, and a head-only row's dynamics, reward and done targets count for nothing while its
    success label does."""
    from dreamgen.world_model.fit import _losses, _stack, false_successes

    rng = np.random.default_rng(5)
    dreams = [*_episodes(2, rng, length=10), *_episodes(1, rng, length=2)]
    for d in dreams:
        d.success[-2:] = True  # the dream said success at its end
    rows = false_successes(dreams, LAYOUT, TABLE, 2, steps=3)
    full = transitions(dreams, LAYOUT, TABLE, 2)
    picked = [6, 7, 8, 15, 16, 17, 18]  # dreams of 9, 9 and 1 transitions: the last 3, 3 and 1
    assert len(rows) == 7 and (rows.real == 0).all() and (rows.success == 0).all()
    for name in ("obs", "action", "context", "instruction", "target"):
        np.testing.assert_array_equal(getattr(rows, name), getattr(full, name)[picked])
    assert full.success[picked].any()  # the labels it overrides said success

    model, _, data = trained
    model.net.eval()
    emb = torch.as_tensor(TABLE.embeddings, dtype=torch.float32)
    real = data["train"]
    index = torch.arange(64).expand(model.members, -1)
    with torch.no_grad():
        plain = _losses(model, *_stack(real, index, emb))
        masked = real.joined(false_successes(dreams, LAYOUT, TABLE, 0, steps=3))
        assert masked.real is not None and masked.real[:len(real)].all() and not masked.real[len(real):].any()
        torch.testing.assert_close(_losses(model, *_stack(masked, index, emb)), plain)  # the real rows alone
        both = torch.cat([torch.arange(64), len(real) + torch.arange(7)]).expand(model.members, -1)
        base = _losses(model, *_stack(masked, both, emb))
        masked.target[len(real):] += 10.0
        masked.done[len(real):] = 1.0
        torch.testing.assert_close(_losses(model, *_stack(masked, both, emb)), base)
        masked.success[len(real):] = 1.0
        assert not torch.allclose(_losses(model, *_stack(masked, both, emb))[0], base[0])


def test_a_fit_with_refuted_dreams_stops_its_success_head_firing_there(trained):
    """Dreams that ran past anything real (s_1 in [2.5, 3.5], beyond every training state, with s_0 in [2, 3],
    where the head, extrapolating "success once s_0 > 1", fires) and were refuted: the same fit as ``trained`` plus their last steps as negatives predicts success there
    far less; on the held-out real transitions its success head stays as good."""
    from dreamgen.world_model.fit import false_successes
    from dreamgen.world_model.metrics import head_calibration

    model, _, data = trained
    rng = np.random.default_rng(9)
    dreams = []
    for i in range(12):
        obs = np.zeros((4, 5), np.float32)
        obs[:, 0], obs[:, 1], obs[:, 4] = rng.uniform(2, 3, 4), rng.uniform(2.5, 3.5, 4), rng.uniform(-1, 1)
        obs[1:, 2:4] = obs[:-1, :2]
        dreams.append(Episode(obs, rng.uniform(-1, 1, (4, 2)).astype(np.float32), np.zeros(4, np.float32),
                              np.array([False, False, False, True]), np.zeros(4, bool),
                              {"instruction": TABLE.texts[i % 2], "task": TABLE.tasks[i % 2]}))
    negatives = false_successes(dreams, LAYOUT, TABLE, 0, steps=3)
    rng = np.random.default_rng(0)  # the fixture's data, again: the same train and val transitions
    episodes = _episodes(40, rng)
    train, val, _ = split_episodes([e.meta["task"] for e in episodes], (0.1, 0.1), np.random.default_rng(1))
    fitted = fit_ensemble(transitions([episodes[i] for i in train], LAYOUT, TABLE),
                          transitions([episodes[i] for i in val], LAYOUT, TABLE), TABLE, LAYOUT, CONFIG, seed=0,
                          negatives=negatives)
    emb = torch.as_tensor(TABLE.embeddings, dtype=torch.float32)[torch.as_tensor(negatives.instruction)]
    fired = {}
    for name, m in (("without", model), ("with", fitted)):
        with torch.no_grad():
            pred = m.predict(torch.as_tensor(negatives.obs), torch.as_tensor(negatives.action), emb,
                             propagation="mean", context=torch.as_tensor(negatives.context))
        fired[name] = float(pred.head("success").mean())
    assert fired["without"] > 0.5 and fired["with"] < 0.5 * fired["without"], fired
    before, after = (head_calibration(m, data["test"])["success"] for m in (model, fitted))
    assert after["ece"] <= before["ece"] + 0.02 and after["brier"] <= before["brier"] + 0.005, (before, after)


def test_the_success_head_at_a_dreams_end_is_read_at_its_last_step():
    """``success_at_dream_ends`` on the known line model (success once |s'|_inf < 0.05): a dream whose last action
    lands at the origin fires, one whose last action stops short does not, whatever came before."""
    from dreamgen.world_model.metrics import success_at_dream_ends
    from tests.known_dynamics import TABLE as LINE_TABLE
    from tests.known_dynamics import LineModel

    def dream(last_action):
        obs = np.array([[0.0, 0.0], [1.0, 0.5], [0.5, 0.2], [0.0, 0.0]], np.float32)
        action = np.array([[1.0, 0.5], [-0.5, -0.3], last_action, [0.0, 0.0]], np.float32)
        return Episode(obs, action, np.zeros(4, np.float32), np.array([False, False, False, True]), np.zeros(4, bool),
                       {"instruction": "go home", "task": "home"})

    assert LINE_TABLE.texts[0] == "go home"
    out = success_at_dream_ends(LineModel(), [dream([-0.5, -0.2]), dream([-0.3, -0.2]), dream([-0.5, -0.2])])
    assert out["success"] == {"mean": pytest.approx(2 / 3), "fires": pytest.approx(2 / 3), "dreams": 3}
    assert success_at_dream_ends(LineModel(), []) == {}
