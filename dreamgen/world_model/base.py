"""The WorldModel contract and its instruction table (the observation layout it predicts in:
``dreamgen.spaces.ObsLayout``, which the robot and the store share).

The model owns its rollout state: ``initial_state(obs[B,O], embeddings[B,C], *, generator) -> RowState``
and ``step(state, action[B,A], *, generator, propagation) -> (RowState, Prediction)``. A ``RowState``
holds what a row carries (observation, conditioning, ensemble member, previous actions) and can be
indexed, tiled and written back, so a planner branches one row into many candidate futures. What a row
carries is the model's business: ``executed`` / ``resumed`` carry it across a real step (MPC),
``spread`` branches it over members, ``render`` draws it (None: no images), ``episode_disagreement``
scores a recorded episode (the filter). ``OwnsRows`` gives every model these defaults.

Underneath, ``predict(obs[B,O], action[B,A], cond, *, generator, propagation, members, context) ->
Prediction`` is one batched step with ``next_obs[B,O]``, the model's heads by name (``heads``:
``reward[B]``, ``success[B]`` and ``done[B]`` probabilities, and whatever heads a model adds) and
``disagreement[B]`` (epistemic: spread of the ensemble members' mean predictions, in normalised units).
``cond`` is either instruction embeddings ``[B,C]`` or what ``condition(embeddings)`` returned for them
(rows on axis 1) — conditioning happens once per episode.

Heads are named in config, never in code: the planner's objective (``planner.objective``: head ->
weight) and the dream's success and end (``dream.success_head``, ``dream.done_head``). A model says which
heads it has (``heads``); ``require_heads`` refuses a setting naming one it lacks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np
import torch

from dreamgen.errors import InstructionError
from dreamgen.spaces import ObsLayout

PROPAGATIONS = ("random", "fixed", "mean")  # member per sample | member per episode | ensemble mean
# Planning only: each row is computed by its own member (``members[B]``) alone, at 1/K of the ensemble's
# cost; there is no spread to measure, so ``disagreement`` is NaN (a planner scores it with all members).
ONE_MEMBER = "member"


HEADS = ("reward", "success", "done")  # every model's heads: a value, and two probabilities


class Prediction(NamedTuple):
    """One batched model step. Shapes: ``next_obs[B,O]``, every head and ``disagreement`` ``[B]``; float32."""

    next_obs: torch.Tensor
    heads: dict[str, torch.Tensor]  # by name: HEADS, then any the model adds
    disagreement: torch.Tensor

    def head(self, name: str) -> torch.Tensor:
        try:
            return self.heads[name]
        except KeyError:
            raise KeyError(f"the model predicts no head {name!r}; its heads: {', '.join(self.heads)}") from None


def require_heads(model: Any, names: Sequence[str], setting: str) -> None:
    """Refuse ``setting`` (say ``planner.objective``) when it names a head ``model`` does not predict."""
    from dreamgen.errors import ConfigError

    have = tuple(getattr(model, "heads", HEADS))
    missing = [name for name in names if name not in have]
    if missing:
        kind = getattr(model, "kind", type(model).__name__)
        name = getattr(model, "info", {}).get("world_model_id", "")
        raise ConfigError(f"{setting} names head {missing[0]!r}; this world model ({name + ', ' if name else ''}"
                          f"kind {kind}) predicts {', '.join(have)}")


def next_context(context: Any, action: Any) -> Any:
    """Shift the previous-actions context ``[B, k*A]`` by one step: ``action[B, A]`` becomes the newest."""
    keep = context.shape[-1] - action.shape[-1]
    if keep < 0:  # no context (k = 0)
        return context
    if isinstance(context, torch.Tensor):
        return torch.cat([action, context[..., :keep]], -1)
    return np.concatenate([action, context[..., :keep]], -1)


def action_context(actions: np.ndarray, history: int) -> np.ndarray:
    """For every frame ``t`` of one episode's ``actions[T, A]``: actions ``t-1 .. t-history`` (zeros before
    the start) -> ``[T, history*A]``."""
    steps, width = actions.shape
    padded = np.concatenate([np.zeros((history, width), actions.dtype), actions])
    return np.concatenate([padded[history - j:history - j + steps] for j in range(1, history + 1)], 1) \
        if history else np.zeros((steps, 0), actions.dtype)


@dataclasses.dataclass
class InstructionTable:
    """The instructions a model was trained on: ``texts[N]``, their ``tasks[N]``, ``embeddings[N,C]``."""

    texts: list[str]
    tasks: list[str]
    embeddings: np.ndarray

    def __post_init__(self) -> None:
        self._index = {text: i for i, text in enumerate(self.texts)}

    def __len__(self) -> int:
        return len(self.texts)

    def lookup(self, texts: Sequence[str]) -> np.ndarray:
        """Row index of each text, or an error naming the first unknown one and what the model knows."""
        try:
            return np.array([self._index[text] for text in texts], dtype=np.int64)
        except KeyError as exc:
            known = "; ".join(f"{t!r} ({task})" for t, task in zip(self.texts, self.tasks, strict=True))
            raise InstructionError(
                f"instruction {exc.args[0]!r} is not in the world model's table; resolve free text to a "
                f"task first and use one of the {len(self.texts)} it was trained on: {known}"
            ) from None

    def extended(self, texts: Sequence[str], tasks: Sequence[str], embeddings: np.ndarray) -> InstructionTable:
        """A copy with the new ``texts`` appended (texts already in the table are skipped). The model
        conditions on embeddings, so any text can be dreamed once it has a row; ``task`` "" = no task."""
        new = [i for i, text in enumerate(texts) if text not in self._index]
        return InstructionTable(self.texts + [texts[i] for i in new], self.tasks + [tasks[i] for i in new],
                                np.concatenate([self.embeddings, np.asarray(embeddings, np.float32)[new]]))

    def for_task(self, task: str) -> str:
        """The first instruction of ``task`` in the table (raises if the model never saw the task)."""
        for text, t in zip(self.texts, self.tasks, strict=True):
            if t == task:
                return text
        raise InstructionError(f"the world model was not trained on task {task!r}; "
                               f"its tasks are {sorted(set(self.tasks))}")


@dataclasses.dataclass
class RowState:
    """The rollout state of ``B`` rows: ``obs[B,O]``, ``cond`` (``condition``'s output, rows on axis 1),
    ``member[B]`` (the ensemble member of each row, for ``propagation="fixed"``), ``context[B,k*A]``
    (the previous actions, newest first) and, for a latent model, ``latent[B,L]`` (what its dynamics step on)."""

    obs: torch.Tensor
    cond: torch.Tensor
    member: torch.Tensor
    context: torch.Tensor
    latent: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.obs.shape[0])

    def index(self, rows: Any) -> RowState:
        """The state of ``rows`` (indices or a bool mask), as a new state."""
        rows = torch.as_tensor(rows, device=self.obs.device)
        return RowState(self.obs[rows], self.cond[:, rows], self.member[rows], self.context[rows],
                        None if self.latent is None else self.latent[rows])

    def tile(self, n: int) -> RowState:
        """Every row repeated ``n`` times in place: row ``i`` becomes rows ``i*n .. i*n+n-1``."""
        return RowState(self.obs.repeat_interleave(n, 0), self.cond.repeat_interleave(n, 1),
                        self.member.repeat_interleave(n, 0), self.context.repeat_interleave(n, 0),
                        None if self.latent is None else self.latent.repeat_interleave(n, 0))

    def put(self, rows: Any, other: RowState) -> None:
        """Write ``other``'s rows into ``rows`` of this state (in place)."""
        rows = torch.as_tensor(rows, device=self.obs.device)
        self.obs[rows] = other.obs
        self.cond[:, rows] = other.cond
        self.member[rows] = other.member
        self.context[rows] = other.context
        if self.latent is not None and other.latent is not None:
            self.latent[rows] = other.latent


class OwnsRows:
    """What every model does with its ``RowState`` rows beyond ``initial_state`` and ``step``: carry them
    across a real step (``executed``, ``resumed``), branch them over members (``spread``), draw them
    (``render``) and score a recorded episode's disagreement. A model whose rows carry more overrides these."""

    layout: ObsLayout
    members: int
    context_dim: int
    action_dim: int
    cond_dim: int
    device: torch.device

    def condition(self, cond: torch.Tensor) -> Any:
        raise NotImplementedError

    def predict(self, obs: torch.Tensor, action: torch.Tensor, cond: Any, *,
                generator: torch.Generator | None = None, propagation: str = "random",
                members: torch.Tensor | None = None, context: torch.Tensor | None = None) -> Prediction:
        raise NotImplementedError

    def initial_state(self, obs: torch.Tensor, embeddings: torch.Tensor, *,
                      generator: torch.Generator | None = None, images: Any = None) -> RowState:
        raise NotImplementedError

    def blank(self, rows: int, *, generator: torch.Generator | None = None) -> RowState:
        """``rows`` placeholder rows (zero observation and instruction, nothing executed yet) for ``put``
        to write real rows into; ``generator`` draws their members."""
        dev = self.device
        return self.initial_state(torch.zeros(rows, self.layout.obs_dim, device=dev),
                                  torch.zeros(rows, self.cond_dim, device=dev), generator=generator)

    def executed(self, state: RowState, action: torch.Tensor) -> RowState:
        """What the rows carry after they really executed ``action[B,A]`` (their previous actions advanced);
        their observation is whatever reality shows next (``resumed``)."""
        return dataclasses.replace(state, context=next_context(state.context, action))

    def resumed(self, state: RowState, memory: RowState) -> RowState:
        """Rows ``state`` (just created by ``initial_state`` at real observations) carrying on from what
        ``memory`` (the same rows' earlier state, after ``executed``) remembers: their previous actions."""
        return dataclasses.replace(state, context=memory.context.clone())

    def spread(self, state: RowState, n: int) -> RowState:
        """Every row tiled ``n`` times, copy ``j`` stepped by member ``j mod members`` (under ``ONE_MEMBER``
        propagation every member sees its share of every row)."""
        tiled = state.tile(n)
        tiled.member = torch.arange(len(tiled), device=tiled.member.device) % n % self.members
        return tiled

    def render(self, state: RowState) -> np.ndarray | None:
        """The rows' camera frames ``uint8 [B,C,H,W,3]``; None: this model predicts no images."""
        return None

    @torch.no_grad()
    def episode_prediction(self, obs: np.ndarray, images: np.ndarray | None, action: np.ndarray,
                           cond: np.ndarray) -> Prediction:
        """The model's prediction (ensemble mean, the episode's own previous actions as context) on one recorded
        episode's transitions ``obs[T,O]`` (a latent model: seen as ``images``), ``action[T,A]``, instruction
        embedding ``cond[C]``: its disagreement and every head, ``[T]`` each."""
        dev = self.device
        obs_t = torch.as_tensor(obs, dtype=torch.float32, device=dev)
        history = self.context_dim // self.action_dim
        context = torch.as_tensor(action_context(np.asarray(action, np.float32), history), device=dev)
        c = self.condition(torch.as_tensor(np.broadcast_to(cond, (len(obs_t), len(cond))).copy(), device=dev))
        return self.predict(obs_t, torch.as_tensor(action, dtype=torch.float32, device=dev), c,
                            propagation="mean", context=context)

    def episode_disagreement(self, obs: np.ndarray, images: np.ndarray | None, action: np.ndarray,
                             cond: np.ndarray) -> np.ndarray:
        """The members' disagreement ``[T]`` on one recorded episode (``episode_prediction``'s)."""
        return self.episode_prediction(obs, images, action, cond).disagreement.cpu().numpy()


class StepsRows(OwnsRows):
    """``initial_state`` and ``step`` for any model with ``condition`` and ``predict`` (the default
    rollout state: a ``RowState``)."""

    cameras: Any = None  # a state model sees no images
    kind = "ensemble"
    heads: tuple[str, ...] = HEADS

    def initial_state(self, obs: torch.Tensor, embeddings: torch.Tensor, *,
                      generator: torch.Generator | None = None, images: Any = None) -> RowState:
        """Rows at rest at ``obs[B,O]`` (no previous actions), conditioned on ``embeddings[B,C]``, each with
        a member drawn from ``generator`` (``images``: only a latent model looks at them)."""
        obs = torch.as_tensor(obs, dtype=torch.float32, device=self.device)
        member = torch.randint(self.members, (len(obs),), generator=generator, device=self.device)
        return RowState(obs.clone(), self.condition(torch.as_tensor(embeddings, device=self.device)), member,
                        torch.zeros(len(obs), self.context_dim, device=self.device))

    def step(self, state: RowState, action: torch.Tensor, *, generator: torch.Generator | None = None,
             propagation: str = "random") -> tuple[RowState, Prediction]:
        """Every row one step on: the next state (a new object; ``state`` is not changed) and the prediction."""
        pred = self.predict(state.obs, action, state.cond, generator=generator, propagation=propagation,
                            members=state.member, context=state.context)
        return RowState(pred.next_obs, state.cond, state.member, next_context(state.context, action)), pred


@runtime_checkable
class WorldModel(Protocol):
    """What the dream env needs from a model. Tensors are float32 on ``device``."""

    layout: ObsLayout
    action_dim: int
    cond_dim: int
    context_dim: int  # per-row recurrent input: the previous actions, newest first (0 = none)
    members: int  # ensemble members used at prediction time (1 for a deterministic model)
    instructions: InstructionTable
    disagreement_bound: float  # calibrated on held-out real transitions (inf if not calibrated)
    device: torch.device
    kind: str  # its name in the registry of kinds (dreamgen.world_model.kinds): "ensemble" | "latent" | ...
    cameras: Any  # dreamgen.spaces.Cameras the model sees (None: a state model)
    heads: tuple[str, ...]  # the heads each Prediction carries (HEADS first)

    def condition(self, cond: torch.Tensor) -> Any:
        """Precompute the per-episode conditioning of instruction embeddings ``[B,C]``."""
        ...

    def predict(self, obs: torch.Tensor, action: torch.Tensor, cond: Any, *,
                generator: torch.Generator | None = None, propagation: str = "random",
                members: torch.Tensor | None = None, context: torch.Tensor | None = None) -> Prediction:
        """One batched step. ``members[B]`` (int) picks the member per row for ``propagation="fixed"``;
        ``context[B, context_dim]`` is what ``next_context`` built from the previous steps (None = zeros)."""
        ...

    def initial_state(self, obs: torch.Tensor, embeddings: torch.Tensor, *,
                      generator: torch.Generator | None = None, images: Any = None) -> RowState:
        """The rollout state of rows starting at ``obs[B,O]`` (seen as ``images``, for a latent model) for
        instruction ``embeddings[B,C]``."""
        ...

    def step(self, state: RowState, action: torch.Tensor, *, generator: torch.Generator | None = None,
             propagation: str = "random") -> tuple[RowState, Prediction]:
        """Every row one step: ``(next state, Prediction)``."""
        ...

    def blank(self, rows: int, *, generator: torch.Generator | None = None) -> RowState:
        """Placeholder rows to ``put`` real rows into."""
        ...

    def executed(self, state: RowState, action: torch.Tensor) -> RowState:
        """What the rows carry after really executing ``action`` (MPC on a real robot, between plans)."""
        ...

    def resumed(self, state: RowState, memory: RowState) -> RowState:
        """Fresh rows at real observations, carrying on from ``memory`` (their state after ``executed``)."""
        ...

    def spread(self, state: RowState, n: int) -> RowState:
        """Each row tiled ``n`` times over the members (for ``ONE_MEMBER`` planning)."""
        ...

    def render(self, state: RowState) -> np.ndarray | None:
        """The rows' camera frames, or None for a model that predicts no images."""
        ...

    def episode_disagreement(self, obs: np.ndarray, images: np.ndarray | None, action: np.ndarray,
                             cond: np.ndarray) -> np.ndarray:
        """Disagreement ``[T]`` on one recorded episode (the filter's per-dream score)."""
        ...
