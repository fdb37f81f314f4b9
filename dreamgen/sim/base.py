"""The Embodiment contract: everything dreamgen needs to know about a robot and its real world.

An ``Embodiment`` is passed in; no module outside ``dreamgen/sim/`` names a simulator. It says:

- ``name`` (recorded in every store and checkpoint; a mismatch is refused by name), the observation
  ``layout`` (which dims the world model predicts, which carry the previous frame, which are the goal),
  ``action_dim`` (actions in [-1, 1]) and ``max_steps`` (the longest episode);
- ``tasks``: each task's natural instructions (the first canonical) and the polarity of its verb;
- ``parts``: named observation slices (``hand``, ``object``, ``goal``) that fidelity metrics report and
  that the retarget sampler carries demos by;
- the real world, where there is one: ``make_env(task)``, a gymnasium env whose ``reset(seed=s)``
  reproduces layout ``s`` and whose ``step`` reports ``info["success"]``; ``replay`` (for ``audit``)
  follows from it;
- cameras, where it has them: ``camera_names`` and ``cameras(env, cameras)``, an offscreen renderer of a
  ``make_env`` env's current frame (``dreamgen.sim.camera``);
- optional: ``make_expert(task)``, a scripted expert, used only to collect demos and by the ``expert``
  sampler (an oracle, labelled as one).

A robot without a simulator (``has_simulator = False``) still trains a world model, dreams, filters and
exports; ``audit`` and ``evaluate`` refuse it with a sentence (``require_simulator``).
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from dreamgen.errors import ConfigError
from dreamgen.safety import SafetyDefaults
from dreamgen.sim import LEGACY
from dreamgen.sim.camera import cameras_from_config
from dreamgen.spaces import Cameras, ObsLayout

Expert = Callable[[np.ndarray], np.ndarray]  # obs[O] -> action[A] in [-1, 1]


@dataclasses.dataclass(frozen=True)
class GoalRule:
    """A task's success as a distance: its ``part`` of the observation (plus ``offset``, e.g. the hand's tool
    centre) within ``radius`` of the observed ``goal`` (``inclusive``: ``<=``, else ``<``, as the simulator
    says). Called on ``obs[..., O]``: success ``bool[...]``; ``distance``: how far, in the observation's units.
    ``hand`` (plus ``hand_offset``): what must reach ``part`` first when the part is an object (None when the
    part is the hand itself); ``approach``: how far it is (0 without one)."""

    part: slice
    goal: slice
    radius: float
    offset: tuple[float, ...] | None = None  # None: none (zeros as wide as the part)
    inclusive: bool = True
    hand: slice | None = None
    hand_offset: tuple[float, ...] | None = None

    def offsets(self) -> tuple[np.ndarray, np.ndarray]:
        """``offset`` and ``hand_offset`` as arrays as wide as the part (zeros where not given)."""
        zero = np.zeros(self.part.stop - self.part.start, np.float32)
        offset, hand = (zero if o is None else np.asarray(o, np.float32) for o in (self.offset, self.hand_offset))
        return offset, hand

    def distance(self, obs: np.ndarray) -> np.ndarray:
        obs = np.asarray(obs)
        return np.linalg.norm(obs[..., self.part] + self.offsets()[0] - obs[..., self.goal], axis=-1)

    def approach(self, obs: np.ndarray) -> np.ndarray:
        obs = np.asarray(obs)
        if self.hand is None:
            return np.zeros(obs.shape[:-1])
        return np.linalg.norm(obs[..., self.hand] + self.offsets()[1] - obs[..., self.part], axis=-1)

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        distance = self.distance(obs)
        return distance <= self.radius if self.inclusive else distance < self.radius


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """A task: natural instructions (the first is canonical) and the polarity of its verb, if any."""

    name: str
    instructions: tuple[str, ...]
    polarity: str = ""  # "open" | "close" | "": lets the resolver keep opposites apart
    has_object: bool = True  # False: the ``object`` part holds nothing here (no object_off_table event)


class Embodiment:
    """A robot and its world. Subclasses set the class attributes and, when they have them, implement
    ``make_env`` and ``make_expert``."""

    name: str
    layout: ObsLayout
    action_dim: int
    max_steps: int
    fps: int  # control rate (frames per second), written to an exported LeRobotDataset
    robot_type: str  # LeRobotDataset's robot_type
    tasks: Mapping[str, TaskSpec]
    parts: Mapping[str, slice] = {}
    has_simulator: bool = True
    has_expert: bool = True
    camera_names: tuple[str, ...] = ()  # cameras ``cameras`` can render (empty: no cameras)
    safety: SafetyDefaults | None = None  # what unsafe means by default (dreamgen/safety.py); None: no events
    robot_bodies: tuple[str, ...] = ()  # MuJoCo body-name prefixes of the robot (for ``table_force``)
    table_bodies: tuple[str, ...] = ()  # MuJoCo body names of the table (empty: no table_strike event)

    def __repr__(self) -> str:
        return f"<embodiment {self.name}>"

    def __reduce__(self) -> Any:  # one instance per class: a Ray worker gets it by class, not by state
        return (type(self), ())

    @property
    def obs_dim(self) -> int:
        return self.layout.obs_dim

    def check_tasks(self, tasks: Iterable[str], *, field: str = "tasks") -> list[str]:
        """Return ``tasks`` as a list, or raise naming the first unknown one, the close matches and the
        embodiment whose tasks these are not."""
        tasks = list(tasks)
        if not tasks:
            raise ConfigError(f"{field} is empty; name at least one of {self.name}'s tasks: {', '.join(self.tasks)}")
        for task in tasks:
            if task not in self.tasks:
                close = difflib.get_close_matches(task, list(self.tasks), n=3, cutoff=0.4)
                hint = f" (did you mean {', '.join(close)}?)" if close else ""
                raise ConfigError(f"{field}: unknown task {task!r} for embodiment {self.name}{hint}; "
                                  f"its tasks: {', '.join(self.tasks)}")
        if len(set(tasks)) != len(tasks):
            raise ConfigError(f"{field} lists a task twice: {tasks}")
        return tasks

    def spec(self) -> dict[str, Any] | None:
        """What a store must record to build this embodiment again (``None``: it is built by name)."""
        return None

    def part(self, name: str) -> slice:
        """The observation slice called ``name`` (e.g. "hand"), or a refusal naming the ones there are."""
        if name not in self.parts:
            raise ConfigError(f"embodiment {self.name} names no observation part {name!r}; its parts: "
                              f"{', '.join(self.parts) or 'none'}")
        return self.parts[name]

    def require_simulator(self, verb: str, instead: str) -> None:
        """Refuse ``verb`` on a robot without a simulator, saying what to do instead."""
        if not self.has_simulator:
            raise ConfigError(f"`dreamgen {verb}` needs a simulator and embodiment {self.name} has none; {instead}")

    def check_recorded(self, recorded: str | None, what: str) -> None:
        """Refuse a store or checkpoint made for another embodiment (``None``: made before embodiments
        were recorded, which were all Meta-World)."""
        made_for = recorded or LEGACY
        if made_for != self.name:
            raise ConfigError(f"{what} was made for embodiment {made_for}, not {self.name}; set "
                              f"embodiment={made_for} or give one made for {self.name}")

    # ------------------------------------------------------------------ the real world (if there is one)
    def make_env(self, task: str, *, max_episode_steps: int | None = None, **render: Any) -> Any:
        """A gymnasium env for ``task``: ``reset(seed=s)`` reproduces layout ``s``, observations are float32
        ``[obs_dim]``, ``step``'s info carries ``success`` (bool)."""
        raise ConfigError(f"embodiment {self.name} has no simulator")

    def camera_config(self, names: Sequence[str] | None, size: int) -> Cameras | None:
        """``camera.names`` and ``camera.size`` checked against this robot's cameras (no names: no images)."""
        if names and not self.camera_names:
            raise ConfigError(f"camera.names={list(names)}: embodiment {self.name} has no cameras dreamgen can "
                              "render; leave camera.names empty (state only)")
        return cameras_from_config(names, size, self.camera_names, self.name)

    def cameras(self, env: Any, cameras: Cameras) -> Any:
        """A renderer of ``env``'s (a ``make_env`` env) current frame: ``renderer() -> uint8 [C, H, W, 3]``."""
        raise ConfigError(f"embodiment {self.name} has no cameras; leave camera.names empty")

    def table_force(self, env: Any) -> float:
        """The largest normal force (N) of any contact between a robot body and the table in ``env`` (a
        ``make_env`` env, after its last step), read from MuJoCo's contacts."""
        import mujoco

        raw = env.unwrapped
        model, data = raw.model, raw.data
        cache = getattr(raw, "_dreamgen_bodies", None)
        if cache is None:  # which bodies are the robot's and which the table's, once per env
            names = [model.body(i).name for i in range(model.nbody)]
            cache = (np.array([n.startswith(self.robot_bodies) for n in names]),
                     np.array([n in self.table_bodies for n in names]))
            raw._dreamgen_bodies = cache
        robot, table = cache
        force, wrench = 0.0, np.zeros(6)
        for i in range(data.ncon):
            a, b = model.geom_bodyid[data.contact[i].geom1], model.geom_bodyid[data.contact[i].geom2]
            if (robot[a] and table[b]) or (robot[b] and table[a]):
                mujoco.mj_contactForce(model, data, i, wrench)
                force = max(force, abs(float(wrench[0])))
        return force

    def success_rule(self, task: str) -> Callable[[np.ndarray], np.ndarray] | None:
        """The task's own success as a function of observations ``obs[..., O] -> bool[...]`` (the simulator's
        criterion, applied to any state: a dream's too), or None where this robot does not know it."""
        return self.goal_rule(task)

    def goal_rule(self, task: str) -> GoalRule | None:
        """The task's success as a part's distance to its goal (``GoalRule``), or None where it is not one."""
        return None

    def make_expert(self, task: str) -> Expert:
        raise ConfigError(f"embodiment {self.name} has no scripted expert (needed to collect demos and by "
                          "generate.sampler.kind=expert); import demonstrations instead (collect.import_root)")

    def replay(self, task: str, seed: int, actions: Sequence[np.ndarray] | np.ndarray, *,
               env: Any = None, cameras: Cameras | None = None, safety: Any = None) -> dict[str, Any]:
        """Replay ``actions`` open-loop from the layout of ``seed``: real success, the observations and the
        per-step ``reward``, ``successes`` and ``done``
        (with ``cameras``: also their ``images[T+1, C, H, W, 3]``; with ``safety``, a ``SafetySpec``: the
        events after each action, ``unsafe[T, E]``).

        ``env``: a ``make_env(task)`` env to reuse (its limit must be at least ``len(actions)``)."""
        own = env is None
        env = self.make_env(task, max_episode_steps=max(len(actions), 1)) if env is None else env
        obs, _ = env.reset(seed=seed)
        render = self.cameras(env, cameras) if cameras is not None else None
        observations, images = [obs], [render()] if render is not None else []
        success, unsafe, rewards, successes, dones = False, [], [], [], []
        for action in actions:
            obs, reward, terminated, _, info = env.step(np.asarray(action, dtype=np.float32))
            observations.append(obs)
            rewards.append(float(reward))
            successes.append(bool(info["success"]))
            dones.append(bool(terminated))
            if safety is not None:
                unsafe.append(safety.label_step(self, env, obs, task))
            if render is not None:
                images.append(render())
            success = success or bool(info["success"])
        if render is not None:
            render.close()
        if own:
            env.close()
        return {"success": success, "obs": np.stack(observations), "reward": np.asarray(rewards, np.float32),
                "successes": np.asarray(successes, bool), "done": np.asarray(dones, bool),
                **({"images": np.stack(images)} if render is not None else {}),
                **({"unsafe": np.asarray(unsafe, bool).reshape(len(unsafe), len(safety.events))}
                   if safety is not None else {})}
