"""What "unsafe" means for a robot: named events, labelled on every real frame.

An embodiment says which events it defines and their default thresholds (``Embodiment.safety``); a user
changes them with ``safety.*``. Three events, each a question about the state after an action:

- ``hand_out_of_workspace``: the hand (the embodiment's ``hand`` part) is outside the workspace box;
- ``object_off_table``: the task's object (its ``object`` part) is below ``object_min_z`` — knocked off the
  table (tasks without an object never raise it);
- ``table_strike``: a robot body touches the table with a normal force above ``table_force_n`` — read from
  the simulator's contacts, so only real episodes carry it.

The first two are rules on the observation (``SafetySpec.label_obs``: a dreamed state can be labelled the
same way); the third needs the simulator (``SafetySpec.label``). A frame's label is the state *after* its
action, as ``success`` is (LeRobot's ``next.*`` convention). ``any`` is the union, derived, never stored.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from dreamgen.errors import ConfigError

EVENTS = ("hand_out_of_workspace", "object_off_table", "table_strike")
OBS_EVENTS = ("hand_out_of_workspace", "object_off_table")  # rules on the state: a dream can be labelled too


@dataclasses.dataclass(frozen=True)
class SafetyDefaults:
    """An embodiment's defaults: the hand's box (m), the height below which an object has left the table
    (m), and the robot-table contact force that counts as a strike (N)."""

    workspace_low: tuple[float, float, float]
    workspace_high: tuple[float, float, float]
    object_min_z: float
    table_force_n: float


@dataclasses.dataclass(frozen=True)
class SafetySpec:
    """The events one run labels, with their thresholds. Build it with ``safety_spec``."""

    events: tuple[str, ...]
    workspace_low: np.ndarray
    workspace_high: np.ndarray
    object_min_z: float
    table_force_n: float
    hand: slice
    object: slice | None
    no_object: frozenset[str]  # tasks without an object: object_off_table is never raised

    def label_obs(self, obs: np.ndarray, task: str) -> dict[str, np.ndarray]:
        """The observation rules among this spec's events, on ``obs[..., O]`` -> ``bool[...]`` each."""
        obs = np.asarray(obs)
        out: dict[str, np.ndarray] = {}
        if "hand_out_of_workspace" in self.events:
            hand = obs[..., self.hand]
            out["hand_out_of_workspace"] = np.any((hand < self.workspace_low) | (hand > self.workspace_high), axis=-1)
        if "object_off_table" in self.events:
            if self.object is None or task in self.no_object:
                out["object_off_table"] = np.zeros(obs.shape[:-1], dtype=bool)
            else:
                out["object_off_table"] = obs[..., self.object][..., 2] < self.object_min_z
        return out

    def label(self, obs: np.ndarray, task: str, *, table_force: float | None = None) -> np.ndarray:
        """``bool[E]`` in ``events`` order for one real frame: ``obs`` after the action, and the largest
        robot-table contact force the simulator reported (needed when ``table_strike`` is an event)."""
        rules = self.label_obs(obs, task)
        row = np.zeros(len(self.events), dtype=bool)
        for i, name in enumerate(self.events):
            if name == "table_strike":
                if table_force is None:
                    raise ValueError("table_strike needs the simulator's table contact force")
                row[i] = table_force > self.table_force_n
            else:
                row[i] = bool(rules[name])
        return row

    def label_step(self, robot: Any, env: Any, obs: np.ndarray, task: str) -> np.ndarray:
        """``label`` for a real ``env`` of ``robot`` right after a step that returned ``obs``."""
        force = robot.table_force(env) if "table_strike" in self.events else None
        return self.label(obs, task, table_force=force)

    def labeller(self, robot: Any, task: str) -> Any:
        """``(env, obs) -> bool[E]``: ``label_step`` bound to one robot and task."""
        return lambda env, obs: self.label_step(robot, env, obs, task)

    def describe(self) -> dict[str, Any]:
        """The spec as JSON (recorded in every store it labels)."""
        return {"events": list(self.events), "workspace_low": self.workspace_low.tolist(),
                "workspace_high": self.workspace_high.tolist(), "object_min_z": self.object_min_z,
                "table_force_n": self.table_force_n}


def defined_events(robot: Any) -> tuple[str, ...]:
    """The events ``robot`` defines: each needs its part (hand, object) or its simulator's table."""
    if robot.safety is None:
        return ()
    have = {"hand_out_of_workspace": "hand" in robot.parts, "object_off_table": "object" in robot.parts,
            "table_strike": robot.has_simulator and bool(robot.table_bodies)}
    return tuple(name for name in EVENTS if have[name])


def _number(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        raise ConfigError(f"{field}={value!r} must be a finite number")
    return float(value)


def _box(value: Any, default: Sequence[float], field: str) -> np.ndarray:
    if value is None:
        return np.asarray(default, dtype=np.float64)
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 3:
        raise ConfigError(f"{field}={value!r} must be three numbers (x, y, z in m), or null for the default")
    return np.asarray([_number(v, f"{field}[{i}]") for i, v in enumerate(value)], dtype=np.float64)


def safety_spec(cfg: Mapping[str, Any] | None, robot: Any) -> SafetySpec | None:
    """``safety.*`` checked against ``robot``'s events and defaults; None where no event is labelled.

    ``events``: ``all`` (every event the robot defines) or a list of their names ([]: none)."""
    cfg = dict(cfg or {})
    unknown = sorted(set(cfg) - {"events", "workspace_low", "workspace_high", "object_min_z", "table_force_n"})
    if unknown:
        raise ConfigError(f"safety.{unknown[0]} is not a setting; safety takes events, workspace_low, workspace_high, "
                          "object_min_z, table_force_n")
    defined = defined_events(robot)
    asked = cfg.get("events", "all")
    if asked == "all":
        events = defined
    elif isinstance(asked, (str, bytes)) or not isinstance(asked, Sequence):
        raise ConfigError(f"safety.events={asked!r} must be `all` or a list of event names "
                          f"({robot.name} defines: {', '.join(defined) or 'none'})")
    else:
        events = tuple(str(e) for e in asked)
        for name in events:
            if name not in defined:
                why = "" if name in EVENTS else f" (events dreamgen knows: {', '.join(EVENTS)})"
                raise ConfigError(f"safety.events: embodiment {robot.name} does not define {name!r}{why}; "
                                  f"it defines: {', '.join(defined) or 'none'}")
        if len(set(events)) != len(events):
            raise ConfigError(f"safety.events lists an event twice: {list(events)}")
    if not events:
        return None
    d: SafetyDefaults = robot.safety
    low = _box(cfg.get("workspace_low"), d.workspace_low, "safety.workspace_low")
    high = _box(cfg.get("workspace_high"), d.workspace_high, "safety.workspace_high")
    if np.any(low >= high):
        axis = "xyz"[int(np.argmax(low >= high))]
        raise ConfigError(f"safety.workspace_low={low.tolist()} is not below safety.workspace_high={high.tolist()} "
                          f"in {axis}; the box needs low < high on every axis")
    min_z = d.object_min_z if cfg.get("object_min_z") is None else _number(cfg["object_min_z"], "safety.object_min_z")
    force = d.table_force_n if cfg.get("table_force_n") is None else _number(cfg["table_force_n"], "safety.table_force_n")
    if force <= 0:
        raise ConfigError(f"safety.table_force_n={force} must be > 0 (newtons); a strike is a contact harder than it")
    return SafetySpec(events=events, workspace_low=low, workspace_high=high, object_min_z=float(min_z),
                      table_force_n=float(force), hand=robot.parts["hand"], object=robot.parts.get("object"),
                      no_object=frozenset(t for t, spec in robot.tasks.items() if not spec.has_object))


def rates(unsafe: np.ndarray, events: Sequence[str]) -> dict[str, float]:
    """Share of frames raising each event, and ``any`` (``unsafe[N, E]`` bool)."""
    unsafe = np.asarray(unsafe, dtype=bool).reshape(-1, len(events))
    if not len(unsafe):
        return {**{e: float("nan") for e in events}, "any": float("nan")}
    return {**{e: float(unsafe[:, i].mean()) for i, e in enumerate(events)}, "any": float(unsafe.any(axis=1).mean())}


def unsafe_rates(store: Any) -> dict[tuple[str, str], dict[str, float]]:
    """``(task, kind) -> {event: share of frames, "any": ...}`` over a labelled store's episodes."""
    groups: dict[tuple[str, str], list[np.ndarray]] = {}
    for episode in store.iter_episodes(images=False):
        groups.setdefault((str(episode.meta["task"]), str(episode.meta["kind"])), []).append(episode.unsafe)
    return {key: rates(np.concatenate(rows), store.events) for key, rows in sorted(groups.items())}
