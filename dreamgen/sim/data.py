"""A robot known only from its data (the ``data`` embodiment): no simulator, no scripted expert.

Everything dreamgen needs is read from a LeRobotDataset v3 at import and written down in the real store
(``info["embodiment_spec"]``), so every later verb describes the robot the same way:

- the state width and action width (the dataset's ``observation.state``-like feature and ``action``);
- the layout: every state dim is predicted, except the last ``robot.static_dims`` (e.g. a goal the
  episode carries unchanged);
- the tasks: each distinct LeRobot task text is a task, named by its text;
- ``max_steps``: the longest imported episode; ``fps`` and ``robot_type``: the dataset's;
- ``parts``: named state slices the user gives (``robot.parts``, e.g. ``{hand: [0, 3]}``), reported by
  the fidelity metrics.

``train-world-model → generate → train-quality → filter → export`` run on it; ``collect`` (other than
the import), ``audit`` and ``evaluate`` need a simulator and refuse with a sentence.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from dreamgen.errors import ConfigError
from dreamgen.sim.base import Embodiment, TaskSpec
from dreamgen.spaces import ObsLayout


class DataRobot(Embodiment):
    has_simulator = False
    has_expert = False

    def __init__(self, name: str, obs_dim: int, action_dim: int, tasks: Sequence[str], *, max_steps: int,
                 fps: int, robot_type: str = "", static_dims: int = 0,
                 parts: Mapping[str, Sequence[int]] | None = None):
        if not name or not isinstance(name, str):
            raise ConfigError(f"robot.name={name!r}; give the robot a name (recorded in every store and checkpoint)")
        if not isinstance(static_dims, int) or not 0 <= static_dims < obs_dim:
            raise ConfigError(f"robot.static_dims={static_dims!r}; must be an integer in [0, {obs_dim}) (the last "
                              f"state dims that never change within an episode; the state has {obs_dim})")
        self.name = name
        self.layout = ObsLayout(f"{name}-state", obs_dim, dynamic=(0, obs_dim - static_dims),
                                static=(obs_dim - static_dims, obs_dim) if static_dims else None)
        self.action_dim = int(action_dim)
        self.tasks = {text: TaskSpec(text, (text,)) for text in tasks}
        self.max_steps, self.fps, self.robot_type = int(max_steps), int(fps), robot_type or name
        self.static_dims = static_dims
        self.parts = {}
        for part, bounds in (parts or {}).items():
            pair = list(bounds) if isinstance(bounds, (list, tuple)) else []
            if not (len(pair) == 2 and all(isinstance(b, int) for b in pair) and 0 <= pair[0] < pair[1] <= obs_dim):
                raise ConfigError(f"robot.parts.{part}={bounds!r}; give [lo, hi] with 0 <= lo < hi <= {obs_dim}")
            self.parts[str(part)] = slice(*pair)

    def spec(self) -> dict[str, Any]:
        """What is written into the real store: enough to build this robot again."""
        return {"name": self.name, "obs_dim": self.obs_dim, "action_dim": self.action_dim,
                "tasks": list(self.tasks), "max_steps": self.max_steps, "fps": self.fps,
                "robot_type": self.robot_type, "static_dims": self.static_dims,
                "parts": {k: [v.start, v.stop] for k, v in self.parts.items()}}

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> DataRobot:
        return cls(spec["name"], int(spec["obs_dim"]), int(spec["action_dim"]), list(spec["tasks"]),
                   max_steps=int(spec["max_steps"]), fps=int(spec["fps"]), robot_type=str(spec["robot_type"]),
                   static_dims=int(spec["static_dims"]), parts=dict(spec["parts"]))

    def __reduce__(self) -> Any:  # to a Ray worker by its spec
        return (DataRobot.from_spec, (self.spec(),))

    def check_tasks(self, tasks: Any, *, field: str = "tasks") -> list[str]:
        """Empty = every task of the robot (its tasks are its dataset's task texts)."""
        tasks = list(tasks)
        return list(self.tasks) if not tasks else super().check_tasks(tasks, field=field)


def recorded(store_info: Mapping[str, Any], where: str) -> DataRobot:
    """The robot a store was imported for (``info["embodiment_spec"]``)."""
    spec = store_info.get("embodiment_spec")
    if not spec:
        raise ConfigError(f"{where} records no robot description (embodiment_spec): it was not imported with "
                          "embodiment=data; import the LeRobotDataset with `dreamgen collect embodiment=data "
                          "collect.import_root=...`")
    return DataRobot.from_spec(spec)
