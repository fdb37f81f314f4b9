"""Safety events: known answers on hand-made states, in the real simulator, through the store and LeRobot,
and one sentence for each mistake in ``safety.*``."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dreamgen.data.store import TrajectoryStore
from dreamgen.errors import ConfigError, StoreError
from dreamgen.safety import EVENTS, rates, safety_spec
from dreamgen.sim.fetch import FETCH
from dreamgen.sim.metaworld import METAWORLD
from dreamgen.types import Episode


def _state(hand=(0.0, 0.6, 0.2), obj=(0.0, 0.7, 0.02)) -> np.ndarray:
    obs = np.zeros(39, np.float32)
    obs[0:3], obs[4:7] = hand, obj
    return obs


def test_hand_made_states_get_their_known_labels():
    spec = safety_spec(None, METAWORLD)
    assert spec is not None and spec.events == EVENTS
    inside = spec.label(_state(), "push-v3", table_force=0.0)
    assert not inside.any()
    # one event at a time, each by the rule that names it
    hand_out = spec.label(_state(hand=(0.6, 0.6, 0.2)), "push-v3", table_force=0.0)
    fallen = spec.label(_state(obj=(0.0, 0.7, -0.2)), "push-v3", table_force=0.0)
    struck = spec.label(_state(), "push-v3", table_force=spec.table_force_n + 1)
    pressed = spec.label(_state(), "push-v3", table_force=spec.table_force_n)  # at the threshold: not a strike
    assert hand_out.tolist() == [True, False, False]
    assert fallen.tolist() == [False, True, False]
    assert struck.tolist() == [False, False, True]
    assert not pressed.any()
    # the rules broadcast over a batch of states (a dream's), and a task without an object never drops it
    batch = np.stack([_state(), _state(hand=(0.0, 0.6, 0.9)), _state(obj=(0.0, 0.7, -1.0))])
    assert spec.label_obs(batch, "push-v3")["hand_out_of_workspace"].tolist() == [False, True, False]
    fetch = safety_spec(None, FETCH)
    assert fetch is not None
    empty = np.zeros(22, np.float32)
    empty[0:3] = (1.3, 0.75, 0.5)  # FetchReach's object slots stay 0: z = 0 is far below the table
    assert not fetch.label_obs(empty, "FetchReach-v4")["object_off_table"]
    assert fetch.label_obs(empty, "FetchPush-v4")["object_off_table"]
    assert rates(np.array([[True, False, False], [False, False, False]]), EVENTS) == {
        "hand_out_of_workspace": 0.5, "object_off_table": 0.0, "table_strike": 0.0, "any": 0.5}


def test_the_simulator_reports_a_hand_driven_into_the_table_and_not_the_expert_reaching():
    spec = safety_spec({"events": ["table_strike"]}, METAWORLD)
    assert spec is not None
    env = METAWORLD.make_env("reach-v3", max_episode_steps=60)
    down = np.array([0.0, 0.0, -1.0, 0.0], np.float32)
    env.reset(seed=3)
    pressed = [spec.label_step(METAWORLD, env, env.step(down)[0], "reach-v3")[0] for _ in range(60)]
    # the hand reaches the table top within 60 steps at full speed down and keeps striking it (the contact
    # bounces, so not every frame)
    assert sum(pressed) >= 5 and not any(pressed[:5])
    expert = METAWORLD.make_expert("reach-v3")
    obs, _ = env.reset(seed=3)
    clear = []
    for _ in range(60):
        obs = env.step(expert(obs))[0]
        clear.append(spec.label_step(METAWORLD, env, obs, "reach-v3")[0])
    assert not any(clear) and METAWORLD.table_force(env) == 0.0
    env.close()


def _episodes(n: int, events: int | None) -> list[Episode]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        t = 4 + i
        out.append(Episode(obs=rng.normal(size=(t, 39)).astype(np.float32), action=np.zeros((t, 4), np.float32),
                           reward=np.zeros(t, np.float32), success=np.zeros(t, bool), done=np.zeros(t, bool),
                           meta={"episode_id": f"e{i}", "task": "push-v3", "kind": "play"},
                           unsafe=None if events is None else rng.random((t, events)) < 0.3))
    return out


def test_labels_round_trip_through_the_store_and_lerobot(tmp_path):
    from dreamgen.data.lerobot_io import export_lerobot, import_lerobot

    spec = safety_spec(None, METAWORLD)
    assert spec is not None
    store = TrajectoryStore.create(tmp_path / "s.zarr", obs_dim=39, action_dim=4, safety=spec.describe())
    episodes = _episodes(3, len(EVENTS))
    store.append(episodes)
    back = TrajectoryStore.open(tmp_path / "s.zarr")
    assert back.events == EVENTS and back.safety["table_force_n"] == spec.table_force_n
    for wrote, read in zip(episodes, back.iter_episodes(), strict=True):
        assert np.array_equal(wrote.unsafe, read.unsafe)
    # the labels are part of the content: the same frames with other labels are another store
    other = TrajectoryStore.create(tmp_path / "o.zarr", obs_dim=39, action_dim=4, safety=spec.describe())
    flipped = _episodes(3, len(EVENTS))
    flipped[0].unsafe = ~flipped[0].unsafe  # type: ignore[operator]
    other.append(flipped)
    assert other.digest() != back.digest()
    # a labelled store refuses an unlabelled episode, a state store a labelled one, naming the episode
    with pytest.raises(StoreError, match=r"episode 0 \(e0\): its safety labels are none"):
        store.append(_episodes(1, None))
    plain = TrajectoryStore.create(tmp_path / "p.zarr", obs_dim=39, action_dim=4)
    with pytest.raises(StoreError, match="carries safety labels, but this store has none"):
        plain.append(_episodes(1, len(EVENTS)))
    assert len(plain) == 0 and len(TrajectoryStore.open(tmp_path / "s.zarr")) == 3
    # LeRobot: next.unsafe names its events, and an import brings them back
    export_lerobot(back.iter_episodes(), tmp_path / "ds", repo_id="me/safe", obs_dim=39, action_dim=4,
                   events=back.events)
    info = json.loads((tmp_path / "ds" / "meta" / "info.json").read_text())
    assert info["features"]["next.unsafe"]["names"] == list(EVENTS)
    imported, _, _, safety = import_lerobot(tmp_path / "ds", repo_id="me/safe", obs_key="observation.state", obs_dim=39,
                                            action_dim=4, robot="metaworld", resolve_task=lambda text: "push-v3")
    assert safety is not None and safety["events"] == list(EVENTS)
    for wrote, read in zip(episodes, imported, strict=True):
        assert np.array_equal(wrote.unsafe, read.unsafe)


def test_a_store_header_with_a_junk_safety_description_is_refused(tmp_path):
    store = TrajectoryStore.create(tmp_path / "s.zarr", obs_dim=39, action_dim=4,
                                   safety={"events": ["table_strike"]})
    store._group.update_attributes({"safety": {"events": "table_strike"}})
    with pytest.raises(StoreError, match="attribute safety=.* is not a safety description"):
        TrajectoryStore.open(tmp_path / "s.zarr")


@pytest.mark.parametrize(("settings", "says"), [
    ({"events": ["explode"]}, "embodiment metaworld does not define 'explode' (events dreamgen knows: "),
    ({"events": ["table_strike", "table_strike"]}, "lists an event twice"),
    ({"events": "table_strike"}, "must be `all` or a list"),
    ({"workspace_low": [0, 0, 1]}, "is not below safety.workspace_high"),
    ({"workspace_high": [1, 1]}, "must be three numbers"),
    ({"table_force_n": -1}, "safety.table_force_n=-1.0 must be > 0"),
    ({"object_min_z": "low"}, "safety.object_min_z='low' must be a finite number"),
    ({"force": 3}, "safety.force is not a setting"),
])
def test_each_mistake_in_the_safety_settings_gets_its_sentence(settings, says):
    with pytest.raises(ConfigError, match=None) as caught:
        safety_spec(settings, METAWORLD)
    assert says in str(caught.value)


def test_a_robot_without_a_simulator_defines_no_event_and_says_so():
    from dreamgen.sim.data import DataRobot

    robot = DataRobot("arm7", obs_dim=7, action_dim=2, tasks=["stack"], max_steps=20, fps=10, parts={"hand": [0, 3]})
    assert safety_spec(None, robot) is None  # `all` of nothing: no labels, nothing refused
    with pytest.raises(ConfigError, match="does not define 'table_strike'.*it defines: none"):
        safety_spec({"events": ["table_strike"]}, robot)


def test_the_smoke_collection_labels_every_frame_and_evaluation_counts_violations(smoke_run):
    store = TrajectoryStore.open(smoke_run["run_dir"] / "real.zarr")
    assert store.events == EVENTS
    labels = np.concatenate([e.unsafe for e in store.iter_episodes(images=False)])
    assert labels.shape == (store.n_frames, len(EVENTS))
    evaluation = json.loads((smoke_run["run_dir"] / "eval.json").read_text())
    unsafe = evaluation["overall"]["unsafe"]
    assert set(unsafe["frames_per_episode"]) == {*EVENTS, "any"}
    assert 0.0 <= unsafe["episodes_unsafe"] <= 1.0


def test_an_export_with_unlabelled_dreams_imports_without_labels(tmp_path):
    from dreamgen.data.lerobot_io import export_lerobot, import_lerobot

    labelled, dream = _episodes(1, len(EVENTS)), _episodes(1, None)
    dream[0].meta.update(episode_id="d0", source="dream")
    export_lerobot([*labelled, *dream], tmp_path / "ds", repo_id="me/mix", obs_dim=39, action_dim=4, events=EVENTS)
    imported, _, _, safety = import_lerobot(tmp_path / "ds", repo_id="me/mix", obs_key="observation.state", obs_dim=39,
                                            action_dim=4, robot="metaworld", resolve_task=lambda text: "push-v3")
    assert safety is None and all(e.unsafe is None for e in imported) and len(imported) == 2
