"""The shared vocabulary of observations, below everything that uses it: ``ObsLayout`` (which observation
dims a model predicts, which carry history, which never change) and ``Cameras`` (which named cameras at
which size). The robot (``dreamgen.sim``), the store (``dreamgen.data``) and the world model
(``dreamgen.world_model``) all import them from here, so none of them imports another for its words.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from dreamgen.errors import ConfigError

if TYPE_CHECKING:
    import torch


@dataclasses.dataclass(frozen=True)
class ObsLayout:
    """Which observation dims the model predicts and which follow from structure.

    ``dynamic`` dims are predicted as Δ from the current value; ``history`` dims (if any) receive the
    previous step's ``dynamic`` values (Meta-World stacks the last frame); ``static`` dims (the goal)
    are carried over unchanged. Every dim is in exactly one group.
    """

    name: str
    obs_dim: int
    dynamic: tuple[int, int]
    history: tuple[int, int] | None = None
    static: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        dims = sorted(d for group in (self.dynamic, self.history, self.static) if group for d in range(*group))
        if dims != list(range(self.obs_dim)):
            raise ValueError(f"ObsLayout {self.name}: groups must tile 0..{self.obs_dim - 1} exactly")
        if self.history and self.history[1] - self.history[0] != self.dynamic[1] - self.dynamic[0]:
            raise ValueError(f"ObsLayout {self.name}: history must be as wide as dynamic")

    @property
    def n_dynamic(self) -> int:
        return self.dynamic[1] - self.dynamic[0]

    def velocity(self, obs: Any) -> Any:
        """Last step's change of the dynamic dims ``[..., D]`` (empty without history dims); numpy or torch."""
        if not self.history:
            return obs[..., :0]
        return obs[..., slice(*self.dynamic)] - obs[..., slice(*self.history)]

    def compose(self, obs: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """The full next observation ``[B,O]`` from the current one and the predicted change ``[B,D]`` of
        the dynamic dims."""
        nxt = obs.clone()
        if self.history:
            nxt[:, slice(*self.history)] = obs[:, slice(*self.dynamic)]
        nxt[:, slice(*self.dynamic)] += delta
        return nxt

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ObsLayout:
        def pair(value: Any) -> tuple[int, int] | None:
            return None if value is None else (int(value[0]), int(value[1]))

        return cls(str(data["name"]), int(data["obs_dim"]), pair(data["dynamic"]),  # type: ignore[arg-type]
                   pair(data.get("history")), pair(data.get("static")))


@dataclasses.dataclass(frozen=True)
class Cameras:
    """Named cameras rendered at ``height`` x ``width``; frames are ``uint8 [C, H, W, 3]``."""

    names: tuple[str, ...]
    height: int
    width: int

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.names), self.height, self.width, 3)

    def to_json(self) -> dict[str, Any]:
        return {"names": list(self.names), "height": self.height, "width": self.width}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Cameras | None:
        if not data:
            return None
        return cls(tuple(str(n) for n in data["names"]), int(data["height"]), int(data["width"]))

    def describe(self) -> str:
        return f"{'+'.join(self.names)} at {self.height}x{self.width}"

    def check_same(self, other: Cameras | None, what: str, against: str) -> None:
        """Refuse ``what`` (seeing ``other``) where ``against`` (seeing ``self``) is needed."""
        if other is None:
            raise ConfigError(f"{what} holds no camera images; {against} sees cameras {self.describe()} — "
                              "collect with camera.names set (an image store), or use a state world model")
        if other != self:
            raise ConfigError(f"{what} sees cameras {other.describe()}, but {against} sees {self.describe()}; "
                              "use the same camera.names and camera.size for both")
