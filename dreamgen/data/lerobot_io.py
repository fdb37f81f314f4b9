"""LeRobotDataset v3 exchange (the only ``import lerobot``): export stores, import real demos.

Export features: ``observation.state`` [O], ``action`` [A], ``next.reward``, ``next.done`` (true
termination only: Meta-World episodes end by truncation), ``next.success``; the episode's instruction is
the LeRobot ``task``; ``source`` (real | dream) and ``provenance`` (JSON: episode id, kind, sampler, world
model, generation job, verdict, quality) are string features constant over an episode, so a dataset mixing
real demos and dreams says which is which frame by frame. With ``split=(state dims, environment dims)``
``observation.state`` holds only the robot's own dims and ``observation.environment_state`` the rest
(lerobot's state-only Diffusion Policy and ACT take the two apart). An image store adds ``observation.images.<camera>`` per camera (LeRobot ``image``
features, PNG in the parquet: lossless); an import reads those back (``image`` features only: a video
feature would need a decoder). Both directions are all-or-nothing:
an export is written to a sibling ``.partial`` folder and renamed into place; an import reads and checks
every episode before returning any.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dreamgen.errors import StoreError
from dreamgen.types import Episode

log = logging.getLogger(__name__)

FPS = 80  # the default control rate (Meta-World's: frame_skip 5 x 2.5 ms); an embodiment gives its own


IMAGES = "observation.images."


UNSAFE = "next.unsafe"  # bool[E]: the safety events after the action, named by the feature's names
LABELLED = "next.unsafe_labelled"  # bool[1]: False where the frame has no labels (a dream's): ignore its next.unsafe
PROVENANCE = ("episode_id", "kind", "sampler", "world_model_id", "job_id", "verdict", "quality")


def _features(obs_dim: int, action_dim: int, cameras: Any = None, split: Any = None,
              events: Sequence[str] = ()) -> dict:
    images = {f"{IMAGES}{name}": {"dtype": "image", "shape": (cameras.height, cameras.width, 3),
                                  "names": ["height", "width", "channels"]} for name in cameras.names} if cameras else {}
    state = {"observation.state": {"dtype": "float32", "shape": (obs_dim,), "names": None}} if split is None else {
        "observation.state": {"dtype": "float32", "shape": (len(split[0]),), "names": None},
        "observation.environment_state": {"dtype": "float32", "shape": (len(split[1]),), "names": None}}
    return {**images, **state,
        "source": {"dtype": "string", "shape": (1,), "names": None},
        "provenance": {"dtype": "string", "shape": (1,), "names": None},
        "action": {"dtype": "float32", "shape": (action_dim,), "names": None},
        "next.reward": {"dtype": "float32", "shape": (1,), "names": None},
        "next.done": {"dtype": "bool", "shape": (1,), "names": None},
        "next.success": {"dtype": "bool", "shape": (1,), "names": None},
        **({UNSAFE: {"dtype": "bool", "shape": (len(events),), "names": list(events)},
            LABELLED: {"dtype": "bool", "shape": (1,), "names": None}} if events else {}),
    }


def provenance(meta: dict[str, Any]) -> str:
    """An episode's provenance as one JSON string (``PROVENANCE`` fields it has; NaN quality as null)."""
    import json
    import math

    out = {k: meta[k] for k in PROVENANCE if k in meta}
    if isinstance(out.get("quality"), float) and math.isnan(out["quality"]):
        out["quality"] = None
    return json.dumps({k: (v.item() if hasattr(v, "item") else v) for k, v in out.items()}, sort_keys=True)


def export_lerobot(episodes: Iterable[Episode], root: str | Path, *, repo_id: str, obs_dim: int,
                   action_dim: int, fps: int = FPS, robot_type: str = "sawyer", cameras: Any = None,
                   split: tuple[list[int], list[int]] | None = None, events: Sequence[str] = ()) -> int:
    """Write ``episodes`` as a LeRobotDataset v3 at ``root`` (must not exist); return the count. With
    ``cameras`` (an image store's), every frame's images go in as ``observation.images.<camera>``; with
    ``split``, the state is written as ``observation.state`` (its first dims) and
    ``observation.environment_state`` (its second); with ``events`` (a labelled store's), each frame's safety
    labels go in as ``next.unsafe`` (False with ``next.unsafe_labelled`` False for an episode without them)."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    root = Path(root)
    if root.exists():
        raise StoreError(f"{root}: export target already exists; choose a new export root")
    partial = root.with_name(root.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    count = 0
    try:
        dataset = LeRobotDataset.create(repo_id, fps=fps, features=_features(obs_dim, action_dim, cameras, split, events),
                                        root=partial, robot_type=robot_type, use_videos=False)
        for episode in episodes:
            instruction = str(episode.meta.get("instruction") or episode.meta.get("task") or "")
            source, record = str(episode.meta.get("source", "real")), provenance(episode.meta)
            obs = episode.obs.astype(np.float32)
            state = {"observation.state": obs} if split is None else {
                "observation.state": obs[:, split[0]], "observation.environment_state": obs[:, split[1]]}
            unsafe = episode.unsafe if episode.unsafe is not None else np.zeros((len(episode), len(events)), bool)
            labelled = np.array([episode.unsafe is not None])
            for t in range(len(episode)):
                dataset.add_frame({
                    **({UNSAFE: unsafe[t], LABELLED: labelled} if events else {}),
                    **{key: value[t] for key, value in state.items()},
                    "source": source, "provenance": record,
                    "action": episode.action[t].astype(np.float32),
                    "next.reward": np.array([episode.reward[t]], dtype=np.float32),
                    "next.done": np.array([episode.done[t]]),
                    "next.success": np.array([episode.success[t]]),
                    "task": instruction,
                    **({f"{IMAGES}{name}": episode.images[t, c] for c, name in enumerate(cameras.names)}  # type: ignore[index]
                       if cameras else {}),
                })
            dataset.save_episode()
            count += 1
        dataset.finalize()
        partial.rename(root)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return count


def _open(root: Path, repo_id: str) -> Any:
    """The LeRobotDataset at a local ``root``, or a ``StoreError`` naming what is missing or unreadable."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    if not (root / "meta" / "info.json").is_file():
        raise StoreError(f"{root}: not a LeRobotDataset (no meta/info.json)")
    # an incomplete local root would send lerobot to the hub for the rest: name what is missing instead
    needed = {"meta/tasks.parquet": (root / "meta" / "tasks.parquet").is_file(),
              "meta/episodes/*/*.parquet": any((root / "meta" / "episodes").glob("*/*.parquet")),
              "data/*/*.parquet": any((root / "data").glob("*/*.parquet"))}
    missing = [name for name, present in needed.items() if not present]
    if missing:
        raise StoreError(f"{root}: incomplete LeRobotDataset v3, missing {', '.join(missing)}; copy the whole "
                         "dataset (meta/ and data/) to this root — dreamgen never downloads it")
    try:
        return LeRobotDataset(repo_id, root=root)
    except Exception as exc:
        raise StoreError(f"{root}: lerobot cannot read this dataset ({type(exc).__name__}: {exc})") from exc


def describe_lerobot(root: str | Path, *, repo_id: str, obs_key: str) -> dict[str, Any]:
    """What a dataset says about its robot: state and action widths, task texts, the longest episode,
    fps and robot_type."""
    root = Path(root)
    dataset = _open(root, repo_id)
    features = dataset.meta.features
    for key in (obs_key, "action"):
        if key not in features:
            raise StoreError(f"{root}: feature {key!r} missing; the dataset has {sorted(features)} (set "
                             "collect.import_obs_key to its state feature)")
        if len(features[key]["shape"]) != 1:
            raise StoreError(f"{root}: feature {key!r} has shape {tuple(features[key]['shape'])}; a state or action "
                             "vector is one-dimensional")
    lengths = np.bincount(np.asarray(dataset.hf_dataset.with_format("numpy")["episode_index"]).astype(np.int64))
    return {"obs_dim": int(features[obs_key]["shape"][0]), "action_dim": int(features["action"]["shape"][0]),
            "tasks": [str(text) for text in dataset.meta.tasks.index], "longest": int(lengths.max(initial=0)),
            "fps": int(dataset.meta.fps), "robot_type": str(dataset.meta.robot_type or "")}


def image_cameras(features: dict[str, Any], root: Path) -> Any:
    """The ``Cameras`` of a dataset's ``observation.images.*`` image features (None: it has none), or a
    refusal for frames dreamgen cannot read (video features, cameras of different sizes)."""
    from dreamgen.spaces import Cameras

    keys = sorted(k for k in features if k.startswith(IMAGES))
    if not keys:
        return None
    videos = [k for k in keys if features[k]["dtype"] != "image"]
    if videos:
        raise StoreError(f"{root}: {', '.join(videos)} are {features[videos[0]]['dtype']} features; dreamgen imports "
                         "camera frames stored as LeRobot image features (use_videos=False)")
    shapes = {tuple(features[k]["shape"]) for k in keys}
    if len(shapes) != 1 or len(next(iter(shapes))) != 3 or next(iter(shapes))[2] != 3:
        raise StoreError(f"{root}: camera features {keys} have shapes {sorted(shapes)}; dreamgen needs every camera "
                         "as one [height, width, 3] size")
    height, width, _ = next(iter(shapes))
    return Cameras(tuple(k.removeprefix(IMAGES) for k in keys), int(height), int(width))


def import_lerobot(root: str | Path, *, repo_id: str, obs_key: str, obs_dim: int, action_dim: int, robot: str,
                   resolve_task: Callable[[str], str]) -> tuple[list[Episode], str, Any, dict[str, Any] | None]:
    """Read every episode of a local LeRobotDataset; check all of them before returning any. Returns the
    episodes, where their success labels came from (recorded in the store; the quality model says it) and
    the ``Cameras`` of its image features (None: state only; the episodes then carry no images), and the
    safety description of its ``next.unsafe`` feature (None: no safety labels; else each episode's ``unsafe``).

    ``resolve_task(instruction) -> task`` maps each episode's LeRobot task text to a known task (it
    raises for text it cannot resolve). Rewards and done come from ``next.*`` when present; success from
    ``next.success``, or, without it, from ``next.reward`` (``reward_success``: the better half of each
    task's episodes by return succeed at their last frame).
    """
    root = Path(root)
    dataset = _open(root, repo_id)
    features = dataset.meta.features
    for key, dim in ((obs_key, obs_dim), ("action", action_dim)):
        if key not in features:
            raise StoreError(f"{root}: feature {key!r} missing; the dataset has {sorted(features)}")
        if tuple(features[key]["shape"]) != (dim,):
            raise StoreError(f"{root}: feature {key!r} has shape {tuple(features[key]['shape'])}, "
                             f"expected ({dim},) for embodiment {robot}")
    table = dataset.hf_dataset.with_format("numpy")
    columns = {key: np.asarray(table[key]) for key in [obs_key, "action", "episode_index", "task_index",
                                                        *[k for k in ("next.reward", "next.done",
                                                                      "next.success", UNSAFE, LABELLED)
                                                        if k in features]]}
    cameras = image_cameras(features, root)
    frames = None if cameras is None else np.stack(
        [np.stack([np.asarray(image, np.uint8) for image in table[f"{IMAGES}{name}"]]) for name in cameras.names], 1)
    task_text = {int(row.task_index): str(text) for text, row in dataset.meta.tasks.iterrows()}
    episodes = []
    for episode_index in np.unique(columns["episode_index"]):
        rows = np.flatnonzero(columns["episode_index"] == episode_index)
        n = len(rows)
        if n < 2:
            raise StoreError(f"{root}: episode {int(episode_index)} has {n} frame; every episode needs at least 2 "
                             "(a world model learns from transitions, a policy from what follows a frame); drop it "
                             "from the dataset, nothing was imported")

        def column(key: str, default: np.ndarray, rows=rows) -> np.ndarray:
            return columns[key][rows].reshape(len(rows)) if key in columns else default

        obs, action = columns[obs_key][rows], columns["action"][rows]
        for key, value in ((obs_key, obs), ("action", action), ("next.reward", column("next.reward", np.zeros(n)))):
            bad = ~np.isfinite(np.asarray(value, dtype=np.float64).reshape(n, -1)).all(axis=1)
            if bad.any():
                raise StoreError(f"{root}: episode {int(episode_index)} has non-finite {key} at frame "
                                 f"{int(np.flatnonzero(bad)[0])}; fix or drop it, nothing was imported")
        instruction = task_text[int(columns["task_index"][rows[0]])]
        success = column("next.success", np.zeros(n, dtype=bool)).astype(bool)
        episodes.append(Episode(
            obs=obs.astype(np.float32), action=action.astype(np.float32),
            reward=column("next.reward", np.zeros(n)).astype(np.float32), success=success,
            done=column("next.done", np.zeros(n, dtype=bool)).astype(bool),
            meta={"episode_id": f"lerobot-{repo_id.replace('/', '_')}-{int(episode_index):06d}",
                  "source": "real", "kind": "imported", "instruction": instruction,
                  "task": resolve_task(instruction), "sampler": f"lerobot:{repo_id}",
                  "start_ref": f"lerobot:{repo_id}#{int(episode_index)}"},
            images=None if frames is None else frames[rows],
            unsafe=None if UNSAFE not in columns else columns[UNSAFE][rows].reshape(n, -1).astype(bool),
        ))
    safety = imported_safety(features, columns, root)
    if safety is None:
        for episode in episodes:
            episode.unsafe = None
    if "next.success" in features:
        source = "next.success"
    elif "next.reward" in features:
        reward_success(episodes)
        source = "next.reward: per task, episodes with an above-median return succeed"
    else:
        source = "none: the dataset has no next.success or next.reward"
    log.info("read %d episodes (%d frames) from %s", len(episodes), len(columns["action"]), root)
    return episodes, source, cameras, safety


def imported_safety(features: dict[str, Any], columns: dict[str, np.ndarray], root: Path) -> dict[str, Any] | None:
    """The safety description of a dataset's ``next.unsafe`` feature (None: it has none, or some frames are
    marked unlabelled — a dream's — so no frame's labels are kept), or a refusal for unnamed events."""
    if UNSAFE not in features:
        return None
    names = features[UNSAFE].get("names")
    if not isinstance(names, list) or len(names) != int(features[UNSAFE]["shape"][0]) or not names:
        raise StoreError(f"{root}: feature {UNSAFE} needs one name per event in its names (got {names!r}); name "
                         "the events (e.g. [\"table_strike\"]), nothing was imported")
    if LABELLED in columns and not np.asarray(columns[LABELLED]).astype(bool).all():
        log.warning("%s: some frames have %s=False (exported dreams carry no safety labels); importing without "
                    "safety labels", root, LABELLED)
        return None
    return {"events": [str(n) for n in names], "source": f"imported from {root.name}"}


def reward_success(episodes: list[Episode]) -> None:
    """Success labels from rewards alone: per task, the episodes whose return is above the task's median
    succeed at their last frame (in place). What the quality model learns then is "better than typical"."""
    by_task: dict[str, list[Episode]] = {}
    for episode in episodes:
        by_task.setdefault(str(episode.meta["task"]), []).append(episode)
    for group in by_task.values():
        returns = np.array([float(e.reward.sum()) for e in group])
        for episode, value in zip(group, returns, strict=True):
            episode.success[:] = False
            episode.success[-1] = bool(value > np.median(returns))
