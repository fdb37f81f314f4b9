"""TrajectoryStore: round trips, streaming reads, validation before writing, atomic appends."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from dreamgen.data.store import TrajectoryStore
from dreamgen.errors import StoreError
from dreamgen.types import EPISODE_META
from tests.conftest import REPO, make_episode


def test_round_trip_and_streaming(tmp_path):
    rng = np.random.default_rng(0)
    episodes = [make_episode(rng, int(n), i) for i, n in enumerate(rng.integers(1, 60, size=25))]
    store = TrajectoryStore.create(tmp_path / "s.zarr", obs_dim=39, action_dim=4)
    store.append(episodes[:10])
    store.append(episodes[10:])
    reopened = TrajectoryStore.open(tmp_path / "s.zarr")
    assert len(reopened) == 25
    assert reopened.n_frames == sum(len(e) for e in episodes)
    # tiny read batches force many partial reads; every episode must come back bit-exact
    for batch_frames in (1, 37, 10_000):
        got = list(reopened.iter_episodes(batch_frames=batch_frames))
        assert len(got) == 25
        for want, have in zip(episodes, got, strict=True):
            for key, value in want.frames.items():
                np.testing.assert_array_equal(value, getattr(have, key))
            assert have.meta["episode_id"] == want.meta["episode_id"]
            assert have.meta["seed"] == want.meta["seed"]
            assert have.meta["success"] == bool(want.success.any())
    middle = list(reopened.iter_episodes(7, 9))
    assert [e.meta["episode_id"] for e in middle] == ["ep-0007", "ep-0008"]
    assert set(reopened.meta()) == set(EPISODE_META)
    picked = np.array([0, 3, 24])
    np.testing.assert_array_equal(reopened.first_frames("obs", picked), np.stack([episodes[i].obs[0] for i in picked]))
    assert reopened.first_frames("action", np.array([], np.int64)).shape == (0, 4)


def test_digest_tracks_content(tmp_path):
    rng = np.random.default_rng(1)
    a = TrajectoryStore.create(tmp_path / "a.zarr", obs_dim=39, action_dim=4)
    b = TrajectoryStore.create(tmp_path / "b.zarr", obs_dim=39, action_dim=4)
    episodes = [make_episode(rng, 5, i) for i in range(3)]
    a.append(episodes)
    b.append(episodes)
    assert a.digest() == b.digest()
    episodes[0].obs[0, 0] += 1
    c = TrajectoryStore.create(tmp_path / "c.zarr", obs_dim=39, action_dim=4)
    c.append(episodes)
    assert c.digest() != a.digest()


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda e: setattr(e, "obs", e.obs[:, :10]), "obs has shape"),
        (lambda e: setattr(e, "action", e.action[:-1]), "differ in length"),
        (lambda e: setattr(e, "action", e.action[:, :3]), "action has shape"),
        (lambda e: e.obs.__setitem__((3, 2), np.nan), "obs is not finite"),
        (lambda e: e.reward.__setitem__(4, np.inf), "reward is not finite"),
        (lambda e: setattr(e, "success", e.success.astype(np.float32)), "success has dtype"),
        (lambda e: e.meta.__setitem__("colour", "red"), "unknown metadata"),
    ],
)
def test_bad_episodes_are_rejected_before_writing(tmp_path, mutate, message):
    rng = np.random.default_rng(2)
    store = TrajectoryStore.create(tmp_path / "s.zarr", obs_dim=39, action_dim=4)
    store.append([make_episode(rng, 8, 0)])
    before = store.digest()
    good, bad = make_episode(rng, 8, 1), make_episode(rng, 8, 2)
    mutate(bad)
    with pytest.raises(StoreError, match=message) as info:
        store.append([good, bad])  # the good episode in the same call must not land either
    assert "ep-0002" in str(info.value)
    reopened = TrajectoryStore.open(tmp_path / "s.zarr")
    assert len(reopened) == 1 and reopened.digest() == before


def test_open_refuses_foreign_wrong_version_and_corrupt(tmp_path):
    import zarr

    with pytest.raises(StoreError, match="no zarr.json"):
        TrajectoryStore.open(tmp_path / "missing.zarr")
    zarr.open_group(str(tmp_path / "foreign.zarr"), mode="w").attrs["hello"] = 1
    with pytest.raises(StoreError, match="not a dreamgen trajectory store"):
        TrajectoryStore.open(tmp_path / "foreign.zarr")
    TrajectoryStore.create(tmp_path / "old.zarr", obs_dim=39, action_dim=4)
    meta = json.loads((tmp_path / "old.zarr" / "zarr.json").read_text())
    meta["attributes"]["schema_version"] = 99
    (tmp_path / "old.zarr" / "zarr.json").write_text(json.dumps(meta))
    with pytest.raises(StoreError, match="schema_version 99"):
        TrajectoryStore.open(tmp_path / "old.zarr")
    TrajectoryStore.create(tmp_path / "bad.zarr", obs_dim=39, action_dim=4)
    (tmp_path / "bad.zarr" / "zarr.json").write_text("{not json")
    with pytest.raises(StoreError, match="unreadable zarr store"):
        TrajectoryStore.open(tmp_path / "bad.zarr")
    with pytest.raises(StoreError, match="already exists"):
        TrajectoryStore.create(tmp_path / "old.zarr", obs_dim=39, action_dim=4)
    for key, junk, says in (("obs_dim", "lots", "attribute obs_dim='lots' is not an integer >= 1"),
                            ("obs_dim", 7, "zarr.json says obs_dim=7 but data/obs holds rows of shape (39,)"),
                            ("n_frames", -2, "attribute n_frames=-2 is not an integer >= 0"),
                            ("cameras", {"names": ["corner"]}, "attribute cameras=")):
        TrajectoryStore.create(tmp_path / f"junk-{key}-{junk}.zarr", obs_dim=39, action_dim=4)
        header = tmp_path / f"junk-{key}-{junk}.zarr" / "zarr.json"
        meta = json.loads(header.read_text())
        meta["attributes"][key] = junk
        header.write_text(json.dumps(meta))
        with pytest.raises(StoreError, match=re.escape(says)):
            TrajectoryStore.open(header.parent)


def test_a_full_disk_names_the_store_and_keeps_its_committed_episodes(tmp_path, monkeypatch):
    import errno

    store = TrajectoryStore.create(tmp_path / "s.zarr", obs_dim=39, action_dim=4)
    rng = np.random.default_rng(0)
    store.append([make_episode(rng, 5, 0)])
    before = store.digest()

    def full(self, episodes):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(TrajectoryStore, "_append", full)
    with pytest.raises(StoreError, match=re.escape(f"{store.path}: No space left on device while appending 1 "
                                                   "episodes; the store keeps its 1 committed episodes")):
        store.append([make_episode(rng, 5, 1)])
    monkeypatch.undo()
    assert len(TrajectoryStore.open(store.path)) == 1 and TrajectoryStore.open(store.path).digest() == before


def test_a_lerobot_dataset_of_one_frame_episodes_is_refused_at_import(tmp_path):
    """One frame is no transition: refused by name when read, before anything is imported."""
    from dreamgen.data.lerobot_io import export_lerobot, import_lerobot

    rng = np.random.default_rng(0)
    episodes = [make_episode(rng, 4, 0), make_episode(rng, 1, 1)]
    export_lerobot(episodes, tmp_path / "ds", repo_id="me/one-frame", obs_dim=39, action_dim=4)
    with pytest.raises(StoreError, match="episode 1 has 1 frame; every episode needs at least 2"):
        import_lerobot(tmp_path / "ds", repo_id="me/one-frame", obs_key="observation.state", obs_dim=39,
                       action_dim=4, robot="metaworld", resolve_task=lambda text: "drawer-open-v3")


def _damage(path, how):
    """Damage the chunk file at ``path`` the way a failing disk or a careless copy would."""
    data = bytearray(path.read_bytes())
    if how == "deleted":
        path.unlink()
    elif how == "truncated":
        path.write_bytes(bytes(data[: len(data) // 2]))
    elif how == "flipped":
        data[len(data) // 3] ^= 0x5A
        path.write_bytes(bytes(data))
    else:  # emptied
        path.write_bytes(b"")


@pytest.mark.parametrize("how", ["deleted", "truncated", "flipped", "emptied"])
@pytest.mark.parametrize("array", ["data/obs", "data/done", "meta/episode_ends", "meta/task"])
def test_a_damaged_chunk_is_refused_on_read_naming_store_array_and_episodes(tmp_path, how, array):
    """Never zeros or garbage: every chunk is checksummed (CRC-32C) and must exist below the committed length.
    ``data/done`` is all False — a chunk zarr would otherwise not write, and read back as zeros when deleted."""
    rng = np.random.default_rng(0)
    path = tmp_path / "s.zarr"
    store = TrajectoryStore.create(path, obs_dim=39, action_dim=4)
    store.append([make_episode(rng, 20, i) for i in range(6)])
    chunk = path / array / "c" / "0" / ("0" if array in ("data/obs",) else "")
    chunk = chunk if chunk.is_file() else chunk.parent
    assert chunk.is_file()
    _damage(chunk, how)
    with pytest.raises(StoreError) as refused:
        reopened = TrajectoryStore.open(path)
        reopened.digest()
        list(reopened.iter_episodes())
    message = str(refused.value)
    assert str(path) in message and array in message and "damaged store" in message
    assert "episodes 0..5" in message


WRITER = textwrap.dedent("""
    import sys, numpy as np
    sys.path.insert(0, {repo!r})
    from dreamgen.data.store import TrajectoryStore
    from tests.conftest import make_episode
    store = TrajectoryStore.open({path!r}, mode="r+")
    rng = np.random.default_rng(int(sys.argv[1]))
    i = 1000
    while True:  # append big batches forever; the test kills us mid-write
        store.append([make_episode(rng, 400, i + k) for k in range(20)])
        print(len(store), flush=True)
        i += 20
""")


@pytest.mark.parametrize("delay", [0.05, 0.3, 0.9])
def test_killed_writer_leaves_only_whole_committed_episodes(tmp_path, delay):
    rng = np.random.default_rng(3)
    path = tmp_path / "s.zarr"
    store = TrajectoryStore.create(path, obs_dim=39, action_dim=4)
    base = [make_episode(rng, 30, i) for i in range(5)]
    store.append(base)
    before = store.digest()
    script = tmp_path / "writer.py"
    script.write_text(WRITER.format(repo=str(REPO), path=str(path)))
    proc = subprocess.Popen([sys.executable, str(script), "7"], stdout=subprocess.PIPE, text=True)
    time.sleep(2.0 + delay)  # imports take ~1-2 s; then we land somewhere inside an append
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    printed = [int(line) for line in proc.stdout.read().split()]
    reopened = TrajectoryStore.open(path)
    n = len(reopened)
    assert (n - 5) % 20 == 0, "a reader must never see part of an append"
    last = printed[-1] if printed else 5
    assert n in (last, last + 20), (n, printed)  # committed just before the kill, or not at all
    episodes = list(reopened.iter_episodes())
    assert len(episodes) == n and sum(len(e) for e in episodes) == reopened.n_frames
    ends = reopened.episode_ends()
    assert ends[-1] == reopened.n_frames and np.all(np.diff(ends) > 0)
    if n == 5:
        assert reopened.digest() == before
    # the store stays appendable: the uncommitted tail is dropped and new episodes land after it
    writable = TrajectoryStore.open(path, mode="r+")
    writable.append([make_episode(rng, 12, 99)])
    again = TrajectoryStore.open(path)
    assert len(again) == n + 1
    last = again.episode(n)
    assert last.meta["episode_id"] == "ep-0099" and len(last) == 12
    for want, have in zip(base, again.iter_episodes(0, 5), strict=True):
        np.testing.assert_array_equal(want.obs, have.obs)


def test_the_commit_is_one_final_write_of_the_root_metadata(tmp_path, monkeypatch):
    """Both counts change in one atomic file replace, after every data write (a torn commit is what a
    kill between two writes would leave)."""
    import zarr.storage

    store = TrajectoryStore.create(tmp_path / "s.zarr", obs_dim=39, action_dim=4)
    store.append([make_episode(np.random.default_rng(0), 5, 0)])
    writes: list[str] = []
    original = zarr.storage.LocalStore.set

    async def recording_set(self, key, value, *args, **kwargs):
        writes.append(key)
        return await original(self, key, value, *args, **kwargs)

    monkeypatch.setattr(zarr.storage.LocalStore, "set", recording_set)
    store.append([make_episode(np.random.default_rng(1), 7, i) for i in range(1, 4)])
    assert writes.count("zarr.json") == 1 and writes[-1] == "zarr.json", writes
