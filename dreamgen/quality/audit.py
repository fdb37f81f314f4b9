"""The dream audit (EVALUATION.md §4): does the dream tell the truth?

A dream that started at a real episode's first frame (known layout seed) is replayed open-loop in the
real simulator with the dream's own actions; its real outcome is whether ``info["success"]`` is reached
within the dream's length. Labels are kept per ``episode_id`` in ``labels.json`` so a rerun replays only
dreams it has not seen. Audited dreams are split into a ``fit`` fold (the quality model and the
target-precision threshold may learn from it) and a ``test`` fold (the only one the audit reports
precision on), per task by the rank of a hash of their id (``assign_folds``): both folds hold dreams of
every task with at least two audited dreams, whatever the ids, and the split depends on the ids alone.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dreamgen.evaluate import wilson_interval
from dreamgen.seeding import make_rng
from dreamgen.sim.base import Embodiment
from dreamgen.types import Episode

FOLDS = ("fit", "test")


def _rank_key(episode_id: str) -> tuple[str, str]:
    return hashlib.sha256(episode_id.encode()).hexdigest(), episode_id


def assign_folds(labels: Mapping[str, dict[str, Any]], test_fraction: float = 0.5) -> None:
    """Set every label's ``fold`` in place. Per task, the audited dreams ranked by a hash of their id: the
    first ``round(n * test_fraction)`` are ``test`` — at least one and at most ``n - 1``, so neither fold of
    a task with two or more is ever empty by chance — the rest ``fit`` (a task's only audited dream: ``fit``). Recorded in ``labels.json``, which
    every later verb reads, so they all agree."""
    by_task: dict[str, list[str]] = {}
    for eid, entry in labels.items():
        by_task.setdefault(str(entry.get("task", "")), []).append(eid)
    for ids in by_task.values():
        n = len(ids)
        k = min(max(int(np.floor(n * test_fraction + 0.5)), 1), n - 1)  # n = 1: fit (it can still teach)
        for rank, eid in enumerate(sorted(ids, key=_rank_key)):
            labels[eid]["fold"] = "test" if rank < k else "fit"


def auditable(meta: Mapping[str, np.ndarray]) -> np.ndarray:
    """Dreams that can be replayed: a known real layout seed and a matched task (not novel)."""
    return (meta["source"] == "dream") & (meta["seed"] >= 0) & (meta["task"] != "")


def sample_for_audit(meta: Mapping[str, np.ndarray], per_task: int, seed: int) -> np.ndarray:
    """Up to ``per_task`` auditable dream indices per task, drawn reproducibly from ``seed``."""
    pick: list[np.ndarray] = []
    ok = auditable(meta)
    for index, task in enumerate(sorted(set(meta["task"][ok].tolist()))):
        rows = np.flatnonzero(ok & (meta["task"] == task))
        rng = make_rng(seed, "audit", index)
        pick.append(np.sort(rng.permutation(rows)[:per_task]))
    return np.sort(np.concatenate(pick)) if pick else np.zeros(0, np.int64)


def replay_episode(episode: Episode, robot: Embodiment, env: Any = None, safety: Any = None) -> dict[str, Any]:
    """Replay one dream's actions from its start seed in ``robot``'s simulator: real success, start-state
    mismatch, real obs (with ``safety``: the safety events the real replay raised, ``unsafe[T, E]``)."""
    out = robot.replay(str(episode.meta["task"]), int(episode.meta["seed"]), episode.action, env=env, safety=safety)
    start_err = float(np.abs(out["obs"][0] - episode.obs[0]).max())
    return {"real_success": bool(out["success"]), "start_error": start_err, "real_obs": out["obs"],
            "reward": out["reward"], "successes": out["successes"], "done": out["done"],
            **({"unsafe": out["unsafe"]} if safety is not None else {})}


def replayed_episode(dream: Episode, result: Mapping[str, Any]) -> Episode:
    """The real episode a dream's replay was (``replay_episode``'s ``result``): the real states before each of
    the dream's actions, the real rewards, success and safety events; ``kind`` replay, id ``replay-<dream's>``."""
    meta: dict[str, Any] = {k: dream.meta[k] for k in ("task", "instruction", "seed") if k in dream.meta}
    return Episode(obs=np.asarray(result["real_obs"][:-1], np.float32), action=np.asarray(dream.action, np.float32),
                   reward=result["reward"], success=result["successes"], done=result["done"],
                   meta={**meta, "episode_id": f"replay-{dream.meta['episode_id']}", "source": "real", "kind": "replay",
                         "start_ref": f"seed:{int(dream.meta['seed'])}", "sampler": f"replay of {dream.meta['episode_id']}"},
                   unsafe=result.get("unsafe"))


def load_labels(path: Path) -> dict[str, dict[str, Any]]:
    """The audit's real outcome per dream id (empty when there is no file), or a ``StoreError`` naming it."""
    from dreamgen.errors import StoreError

    if not path.is_file():
        return {}
    redo = "delete it and rerun `dreamgen audit` to replay the dreams again"
    try:
        labels = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise StoreError(f"{path}: not valid JSON ({exc}); {redo}") from exc
    if not isinstance(labels, dict) or not all(isinstance(v, dict) and "real_success" in v for v in labels.values()):
        raise StoreError(f"{path}: not audit labels (a JSON object of episode id -> {{real_success, ...}}); {redo}")
    return labels


def replay_dreams(episodes: Iterable[Episode], labels: dict[str, dict[str, Any]], robot: Embodiment,
                  on_episode: Callable[[], None] | None = None, safety: Any = None,
                  keep: list[Episode] | None = None) -> int:
    """Add a label for every episode not in ``labels`` (keyed by episode_id); return how many were replayed.
    With ``safety`` (a ``SafetySpec``), each label says which events the real replay raised (``unsafe``: the
    event names, ``unsafe_frames``: how many frames raised any).
    With ``keep``, each replay is appended to it as a real episode (``replayed_episode``).
    The caller assigns folds (``assign_folds``), so a changed test fraction re-folds old labels too."""
    done, envs = 0, {}
    for episode in episodes:
        eid = str(episode.meta["episode_id"])
        if eid not in labels:
            task = str(episode.meta["task"])
            if task not in envs or len(episode) > robot.max_steps:
                envs[task] = robot.make_env(task, max_episode_steps=max(robot.max_steps, len(episode)))
            result = replay_episode(episode, robot, envs[task], safety)
            if keep is not None:
                keep.append(replayed_episode(episode, result))
            labels[eid] = {"task": str(episode.meta["task"]), "real_success": result["real_success"],
                           "dream_success": bool(episode.success.any()), "length": len(episode),
                           "start_error": result["start_error"]}
            if safety is not None:
                raised = result["unsafe"]
                labels[eid].update(unsafe=[e for i, e in enumerate(safety.events) if raised[:, i].any()],
                                   unsafe_frames=int(raised.any(axis=1).sum()))
            done += 1
        if on_episode is not None:
            on_episode()
    for env in envs.values():
        env.close()
    return done


def rates(accepted: np.ndarray, real: np.ndarray) -> dict[str, Any]:
    """Precision (real success among accepted), recall (accepted among real successes), acceptance,
    each with its Wilson 95% interval."""
    accepted, real = np.asarray(accepted, bool), np.asarray(real, bool)
    out: dict[str, Any] = {"n": int(len(real)), "accepted": int(accepted.sum()),
                           "real_successes": int(real.sum())}
    for name, hits, n in (("precision", int((accepted & real).sum()), int(accepted.sum())),
                          ("recall", int((accepted & real).sum()), int(real.sum())),
                          ("acceptance", int(accepted.sum()), int(len(real)))):
        low, high = wilson_interval(hits, n)
        out[name] = {"value": hits / n if n else float("nan"), "ci95": [low, high], "hits": hits, "of": n}
    return out


def compare_filters(filters: Mapping[str, np.ndarray], real: np.ndarray, tasks: Sequence[str]) -> dict[str, Any]:
    """``rates`` of each named accept mask, overall and per task."""
    tasks_arr = np.asarray(tasks)
    report: dict[str, Any] = {}
    for name, accepted in filters.items():
        entry = {"overall": rates(accepted, real)}
        entry["per_task"] = {t: rates(accepted[tasks_arr == t], real[tasks_arr == t])
                             for t in sorted(set(tasks_arr.tolist()))}
        report[name] = entry
    return report


def unsafe_audit(predicted: Sequence[Sequence[str]], raised: Sequence[Sequence[str]], events: Sequence[str],
                 rejected: Sequence[str] | None = None) -> dict[str, Any]:
    """The safety head's foresight on dreams against their real replays: per event and ``any``, ``rates`` with
    "accepted" read as "predicted unsafe" and "real" as "the replay raised it" — precision is the share of dreams
    the head flags whose replay really goes unsafe, recall the share of really unsafe ones it flags. With
    ``rejected`` (each dream's filter reason), ``rejections``: the same for the dreams the filter rejected as
    ``unsafe:<event>`` (a hit is a replay raising any event)."""
    out: dict[str, Any] = {}
    for event in [*events, "any"]:
        flag = np.array([bool(p) if event == "any" else event in p for p in predicted], bool)
        real = np.array([bool(r) if event == "any" else event in r for r in raised], bool)
        out[event] = rates(flag, real)
    report: dict[str, Any] = {"events": out}
    if rejected is not None:
        report["rejections"] = rates(np.array([str(r).startswith("unsafe:") for r in rejected], bool),
                                     np.array([bool(r) for r in raised], bool))
    return report
