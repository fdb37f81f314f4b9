"""Cameras end to end: the `pixel-smoke` preset's pipeline (image store → latent world model → pixel dreams →
audit with strips → filter → image BC arms), the image store's integrity, and every bad camera input refused."""

from __future__ import annotations

import contextlib
import json
import shutil

import numpy as np
import pytest
import torch

from dreamgen.data.store import TrajectoryStore
from dreamgen.errors import StoreError
from dreamgen.sim.camera import Cameras
from dreamgen.sim.metaworld import METAWORLD
from tests.conftest import in_process, make_episode


@pytest.fixture(scope="module")
def pixel_run(tmp_path_factory) -> dict:
    """The whole pixel-smoke pipeline once, in this process (generation too: the Ray path is the state one's)."""
    work = tmp_path_factory.mktemp("pixels")
    run_dir = work / "run"
    common = ["experiment=pixel-smoke", f"run_dir={run_dir}", f"tracking.uri=sqlite:///{work / 'mlflow.db'}",
              "progress=false"]
    with contextlib.chdir(work):  # the same entrypoint as the CLI, in this process
        code, _ = in_process("pipeline", [*common, "generate.workers=0"])
    assert code == 0, f"the pixel-smoke pipeline exited {code}"
    return {"work": work, "run_dir": run_dir, "common": common}


def test_real_frames_are_the_simulators_and_replay_exactly(pixel_run):
    real = TrajectoryStore.open(pixel_run["run_dir"] / "real.zarr")
    assert real.cameras == Cameras(("corner3",), 32, 32)
    episode = real.episode(0)
    assert episode.images.shape == (len(episode), 1, 32, 32, 3) and episode.images.dtype == np.uint8
    assert np.abs(np.diff(episode.images.astype(int), axis=0)).sum() > 0  # the arm moves in the pictures
    # the stored frames are the simulator's: replaying the actions from the seed renders them again, bit for bit
    replay = METAWORLD.replay(episode.meta["task"], episode.meta["seed"], episode.action, cameras=real.cameras)
    np.testing.assert_array_equal(replay["images"][:len(episode)], episode.images)


def test_latent_model_dreams_in_pixels_from_real_start_frames(pixel_run):
    from dreamgen.world_model.checkpoint import load_world_model

    run_dir = pixel_run["run_dir"]
    model = load_world_model(run_dir / "world_model")
    assert model.kind == "latent" and model.cameras == Cameras(("corner3",), 32, 32)
    spec = json.loads((run_dir / "world_model" / "world_model.json").read_text())
    assert spec["kind"] == "latent" and spec["cameras"] == {"names": ["corner3"], "height": 32, "width": 32}
    report = json.loads((run_dir / "world_model" / "report.json").read_text())
    one = report["fidelity"]["open_loop"]["1"]
    assert one["starts"] > 0 and np.isfinite(one["psnr_db"]["median"]) and np.isfinite(one["hand_mm"]["median"])
    assert (run_dir / "world_model" / "open_loop_strip.png").is_file()

    real, dreams = (TrajectoryStore.open(run_dir / name) for name in ("real.zarr", "dream.zarr"))
    assert dreams.cameras == real.cameras and len(dreams) == 6
    ids = list(real.meta(["episode_id"])["episode_id"])
    for dream in dreams.iter_episodes():
        assert dream.images.shape == (len(dream), 1, 32, 32, 3)
        # frame 0 is the model's picture of the real start it names: encode the real frame, decode it
        start = ids.index(dream.meta["start_ref"].split("@")[0])
        first = real.episode(start)
        emb = torch.as_tensor(model.instructions.embeddings[model.instructions.lookup([dream.meta["instruction"]])])
        state = model.initial_state(first.obs[:1], emb, images=first.images[:1])
        # the same decode at another batch size (1 row here, 3 in generation): float sums in another order may
        # round a pixel to the next uint8 value, never further — and almost every pixel is identical
        mine, dreamt = model.render(state)[0].astype(int), dream.images[0].astype(int)
        assert np.abs(mine - dreamt).max() <= 1 and (mine != dreamt).mean() < 0.01
        np.testing.assert_allclose(dream.obs[0], first.obs[0])
    # the rollout contract holds for latent rows: tiling and indexing carry the latent, a step keeps shapes
    tiled = state.tile(3)
    nxt, pred = model.step(tiled, torch.zeros(3, model.action_dim), propagation="mean")
    assert nxt.latent.shape == (3, state.latent.shape[1]) and nxt.obs.shape == (3, 39)
    np.testing.assert_allclose(nxt.index([1]).latent.numpy(), nxt.latent[1:2].numpy())
    assert torch.isfinite(pred.disagreement).all()


def test_audit_strips_filter_and_image_arms(pixel_run):
    run_dir = pixel_run["run_dir"]
    strips = sorted((run_dir / "audit" / "strips").glob("strip_*.png"))
    assert 1 <= len(strips) <= 2  # audit.plots = 2 per task, from the held-out fold
    from PIL import Image

    assert Image.open(strips[0]).size == (2 * 32 * 8, 2 * 32 * 2)  # 8 frames; the dream's row above the real one
    dreams = TrajectoryStore.open(run_dir / "dream.zarr")
    assert set(dreams.meta(["verdict"])["verdict"]) <= {"accept", "reject"} and dreams.info.get("filter")
    arms = {p.parent.parent.name: json.loads(p.read_text())["kind"] for p in run_dir.glob("sweep/*/policy/policy.json")}
    assert arms == {"cap0-seed0": "bc-image", "cap0.5-seed0": "bc-image", "control0.5-seed0": "bc-image"}
    assert json.loads((run_dir / "policy" / "policy.json").read_text())["kind"] == "bc"  # the sampler: state BC


def test_planner_dreams_in_a_latent_model(pixel_run, tmp_path):
    """MPPI tiles latent rows into candidate futures: the planner sampler runs on the latent model."""
    code, err = in_process("generate", [*pixel_run["common"], "generate.workers=0", "generate.sampler.kind=planner",
                                        "generate.episodes=2", "planner.samples=8", "planner.prior_samples=2",
                                        "planner.elites=4", "planner.iterations=1",
                                        f"generate.store={tmp_path / 'planned.zarr'}"])
    assert code == 0, err
    planned = TrajectoryStore.open(tmp_path / "planned.zarr")
    assert len(planned) == 2 and all(e.images.shape[0] == len(e) for e in planned.iter_episodes())


def test_a_latent_model_is_the_same_whatever_seeded_the_global_generator(pixel_run, tmp_path):
    """Two fits on the same frames and seed, one after a clock-seeded ``torch.seed()`` (as an imported library
    may do), give one checkpoint: the initial weights come from the fit's seed (two fresh processes once gave
    two models)."""
    from dreamgen.world_model.base import InstructionTable
    from dreamgen.world_model.checkpoint import save_world_model
    from dreamgen.world_model.ensemble import EnsembleConfig
    from dreamgen.world_model.latent import LatentConfig, fit_latent

    store = TrajectoryStore.open(pixel_run["run_dir"] / "real.zarr")
    episodes = [e for e in store.iter_episodes(images=True)][:3]
    texts = sorted({e.meta["instruction"] for e in episodes})
    table = InstructionTable(texts, [next(e.meta["task"] for e in episodes if e.meta["instruction"] == t) for t in texts],
                             np.eye(len(texts), 8, dtype=np.float32))
    ids = []
    for i, reseed in enumerate((lambda: torch.manual_seed(123), torch.seed)):
        reseed()
        model = fit_latent(episodes[:2], episodes[2:], table, METAWORLD.layout, store.cameras,
                           LatentConfig(dim=4, channels=4, epochs=1, batch_size=32),
                           EnsembleConfig(members=2, elites=1, hidden=8, layers=1, max_epochs=1, action_history=0),
                           proprio=(0, 3), seed=0, halt_quantile=0.9)
        ids.append(save_world_model(model, tmp_path / f"m{i}"))
    assert ids[0] == ids[1]


def _image_store(path, cameras: Cameras, n: int = 2):
    rng = np.random.default_rng(0)
    store = TrajectoryStore.create(path, obs_dim=39, action_dim=4, cameras=cameras,
                                   info={"embodiment": "metaworld"})
    episodes = []
    for i in range(n):
        e = make_episode(rng, 5, i)
        e.images = rng.integers(0, 255, (5, *cameras.shape), dtype=np.uint8)
        e.meta.update(source="real", task="button-press-topdown-v3", kind="expert", seed=i)
        episodes.append(e)
    store.append(episodes)
    return store, episodes


def test_image_store_round_trip_and_refusals(tmp_path):
    cams = Cameras(("corner3", "topview"), 16, 16)
    store, episodes = _image_store(tmp_path / "img.zarr", cams, n=3)
    back = list(TrajectoryStore.open(tmp_path / "img.zarr").iter_episodes(batch_frames=4))
    for want, have in zip(episodes, back, strict=True):
        np.testing.assert_array_equal(want.images, have.images)
    assert list(store.iter_episodes(images=False))[0].images is None
    np.testing.assert_array_equal(store.first_frames("images", np.array([2])), episodes[2].images[:1])
    before = store.digest()
    bad = make_episode(np.random.default_rng(1), 5, 9)
    with pytest.raises(StoreError, match="images are none; this image store needs uint8"):
        store.append([bad])
    bad.images = np.zeros((5, 2, 16, 8, 3), np.uint8)
    with pytest.raises(StoreError, match=r"cameras corner3\+topview at 16x16"):
        store.append([bad])
    assert store.digest() == before and len(store) == 3
    state = TrajectoryStore.create(tmp_path / "state.zarr", obs_dim=39, action_dim=4)
    with pytest.raises(StoreError, match="carries images, but this is a state store"):
        state.append([episodes[0]])


def test_corrupt_image_chunk_is_named(tmp_path):
    _image_store(tmp_path / "img.zarr", Cameras(("corner3",), 16, 16))
    chunk = tmp_path / "img.zarr" / "data" / "images" / "c" / "7" / "0" / "0" / "0" / "0"
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))
    store = TrajectoryStore.open(tmp_path / "img.zarr")
    with pytest.raises(StoreError, match=r"data/images does not read back \(episodes 1\.\.1\)"):
        list(store.iter_episodes())
    chunk.unlink()
    with pytest.raises(StoreError, match="chunk data/images/c/7/0/0/0/0 is missing"):
        TrajectoryStore.open(tmp_path / "img.zarr")


def test_camera_mismatches_are_refused_and_write_nothing(pixel_run, tmp_path, capsys):
    common = pixel_run["common"]
    other, _ = _image_store(tmp_path / "other.zarr", Cameras(("corner3",), 16, 16))
    state = TrajectoryStore.create(tmp_path / "state.zarr", obs_dim=39, action_dim=4, info={"embodiment": "metaworld"})
    state.append([make_episode(np.random.default_rng(3), 5, 0)])
    out = tmp_path / "dreams.zarr"
    cases = [
        (f"generate.start_store={other.path}", "sees cameras corner3 at 16x16, but world model"),
        (f"generate.start_store={state.path}", "holds no camera images; world model"),
    ]
    for override, message in cases:
        code, err = in_process("generate", [*common, override, f"generate.store={out}", "generate.workers=0"], capsys)
        assert code == 2 and message in err and "Traceback" not in err, err
        assert not out.exists()
    # a sampler acts on the dream's state: an image policy (its family sees the cameras) is refused
    image_policy = pixel_run["run_dir"] / "sweep" / "cap0-seed0" / "policy"
    code, err = in_process("generate", [*common, "generate.sampler.kind=policy", f"generate.sampler.policy={image_policy}",
                                        f"generate.store={out}", "generate.workers=0"], capsys)
    assert code == 2 and "is an image policy (policy.family=bc-image); samplers act on the dream's state" in err, err
    assert not out.exists()
    run = tmp_path / "run"
    code, err = in_process("train-world-model", ["experiment=pixel-smoke", f"run_dir={run}",
                                                 f"world_model.store={state.path}"], capsys)
    assert code == 2 and "world_model.kind=latent needs camera images" in err and not (run / "world_model").exists()
    code, err = in_process("train-policy", ["experiment=pixel-smoke", f"run_dir={run}", "policy.family=bc-image",
                                            f"policy.store={state.path}"], capsys)
    assert code == 2 and "holds no camera images, and policy.family=bc-image" in err
    for override, message in (("camera.names=[eye]", "'eye' is not a camera of embodiment metaworld"),
                              ("camera.size=40", "camera.size=40; must be a multiple of 16")):
        code, err = in_process("collect", ["experiment=pixel-smoke", f"run_dir={run}", override], capsys)
        assert code == 2 and message in err and not (run / "real.zarr").exists(), err
    shutil.rmtree(run, ignore_errors=True)


def test_lerobot_round_trip_keeps_the_frames(pixel_run, tmp_path, capsys):
    """export writes every camera as a LeRobot image feature; importing that dataset gives an image store
    with the same frames, bit for bit (PNG is lossless)."""
    root = tmp_path / "lerobot"
    code, err = in_process("export", [*pixel_run["common"], f"export.root={root}", "export.kinds=[play]"], capsys)
    assert code == 0, err
    info = json.loads((root / "meta" / "info.json").read_text())
    assert info["features"]["observation.images.corner3"]["dtype"] == "image"
    assert info["features"]["observation.images.corner3"]["shape"] == [32, 32, 3]
    run = tmp_path / "imported"
    code, err = in_process("collect", ["experiment=pixel-smoke", f"run_dir={run}", "camera.names=[]",
                                       f"collect.import_root={root}", "collect.import_repo_id=dreamgen/real"], capsys)
    assert code == 0, err
    original = TrajectoryStore.open(pixel_run["run_dir"] / "real.zarr")
    imported = TrajectoryStore.open(run / "real.zarr")
    assert imported.cameras == original.cameras
    played = [e for e in original.iter_episodes() if e.meta["kind"] == "play"]
    back = list(imported.iter_episodes())
    assert len(back) == len(played)
    for want, have in zip(played, back, strict=True):
        np.testing.assert_array_equal(want.images, have.images)
        np.testing.assert_array_equal(want.obs, have.obs)


def test_physics_checks_known_answer():
    from dreamgen.world_model.metrics import physics_checks

    start = np.zeros((4, 3))
    real = np.array([[0, 0, 0.001], [0, 0, 0], [0.05, 0, 0], [0, 0.03, 0]])  # at rest, at rest, pushed, pushed
    dream = np.array([[0.01, 0, 0], [0, 0, 0.004], [0.03, 0, 0], [0, 0, 0]])  # drifts 10 and 4 mm; follows 1 of 2
    out = physics_checks(start, dream, real)
    assert out["object_still_starts"] == 2 and out["object_still_drift"]["median"] == pytest.approx(7.0)
    assert out["object_moved_starts"] == 2 and out["object_moved_followed"] == 0.5
