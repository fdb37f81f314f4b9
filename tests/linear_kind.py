"""A world-model kind, a head and a policy family that no library file knows: registered here, used by
config alone.

``linear``: the next change of the dynamic dims and the reward are a least-squares linear map of
``[observation, action, 1]``; success and done are the training data's base rates. It adds one head,
``still``: the probability that the step barely moved the robot (``exp(-|Δ| / scale)``), so a test can end
dreams on it (``dream.done_head=still``) and plan with it (``+planner.objective.still=<weight>``).
``mean-action``: a downstream policy family that acts with the mean action of its training mix.
``constant``: a sampler kind that acts one configured action (``generate.sampler.constant.action``) + noise.
Importing this module registers all three (``dreamgen.world_model.kinds.register``, ``policies.families.register``,
``policies.samplers.register``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from dreamgen.errors import ConfigError
from dreamgen.world_model import kinds
from dreamgen.world_model.base import HEADS, InstructionTable, ObsLayout, Prediction, StepsRows
from dreamgen.world_model.fit import transitions
from policies import families, samplers

STILL_SCALE = 0.01  # |Δ dynamic| at which "still" has fallen to 1/e


class LinearWorldModel(StepsRows):
    kind = "linear"
    heads = (*HEADS, "still")
    cameras = None
    members = 1
    context_dim = 0

    def __init__(self, layout: ObsLayout, action_dim: int, instructions: InstructionTable, weights: torch.Tensor,
                 rates: torch.Tensor, info: dict[str, Any] | None = None, device: str = "cpu"):
        self.layout, self.action_dim, self.instructions = layout, action_dim, instructions
        self.cond_dim = int(instructions.embeddings.shape[1])
        self.weights, self.rates = weights.float(), rates.float()  # [O+A+1, D+1], [2] (success, done)
        self.info, self.device = dict(info or {}), torch.device(device)
        self.disagreement_bound = float("inf")

    def condition(self, cond: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(cond, dtype=torch.float32)[None]

    @torch.no_grad()
    def predict(self, obs: torch.Tensor, action: torch.Tensor, cond: Any, *, generator=None, propagation="random",
                members=None, context=None) -> Prediction:
        x = torch.cat([obs, action, torch.ones(len(obs), 1)], 1)
        target = x @ self.weights
        n_dyn = self.layout.n_dynamic
        rows = torch.ones(len(obs))
        still = torch.exp(-torch.linalg.vector_norm(target[:, :n_dyn], dim=1) / STILL_SCALE)
        return Prediction(self.layout.compose(obs, target[:, :n_dyn]),
                          {"reward": target[:, n_dyn], "success": rows * self.rates[0], "done": rows * self.rates[1],
                           "still": still}, torch.zeros(len(obs)))


def fit(request: kinds.FitRequest) -> LinearWorldModel:
    data = transitions(request.train, request.layout, request.table)
    x = np.concatenate([data.obs, data.action, np.ones((len(data), 1), np.float32)], 1)
    weights, *_ = np.linalg.lstsq(x, data.target, rcond=None)
    rates = np.array([data.success.mean(), data.done.mean()], np.float32)
    model = LinearWorldModel(request.layout, data.action.shape[1], request.table, torch.as_tensor(weights),
                             torch.as_tensor(rates), dict(request.info, epochs=1))
    if request.on_epoch is not None:
        request.on_epoch(0, {"wm/val_linear": 0.0})
    return model


def save(model: LinearWorldModel) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    return {"weights": model.weights.contiguous(), "rates": model.rates.contiguous()}, {"action_dim": model.action_dim}


def load(request: kinds.LoadRequest) -> LinearWorldModel:
    return LinearWorldModel(request.layout, int(request.meta["action_dim"]), request.table, request.tensors["weights"],
                            request.tensors["rates"], request.info, request.device)


KIND = kinds.register(kinds.ModelKind("linear", "a least-squares linear map (a test kind)", fit, save, load,
                                      epochs=lambda settings: 1))


# ---------------------------------------------------------------------- a policy family: the mean action
class MeanActionPolicy:
    """Acts with the mean action of its training frames (real and capped dream share alike), whatever it sees."""

    kind = "mean-action"

    def __init__(self, mean: np.ndarray, info: dict[str, Any]):
        self.mean, self.info = np.asarray(mean, np.float32), dict(info)

    def act(self, obs: np.ndarray, instruction_embedding: np.ndarray, *, deterministic: bool = True) -> np.ndarray:
        return np.repeat(self.mean[None], len(obs), 0)

    def save(self, path: Any) -> None:
        import json
        from pathlib import Path

        Path(path).mkdir(parents=True, exist_ok=True)
        (Path(path) / "policy.json").write_text(json.dumps({"kind": self.kind, "mean": self.mean.tolist(),
                                                            "obs_dim": int(self.info["obs_dim"]), "info": self.info}))

    @classmethod
    def load(cls, path: Any) -> MeanActionPolicy:
        import json
        from pathlib import Path

        spec = json.loads((Path(path) / "policy.json").read_text())
        return cls(np.asarray(spec["mean"], np.float32), spec["info"])


def fit_mean(data: families.TrainingData) -> MeanActionPolicy:
    actions = data.action if data.dream is None else np.concatenate([data.action, data.dream[1]])
    share = 0.0 if data.dream is None else min(data.max_dream_fraction, len(data.dream[1]) / len(actions))
    return MeanActionPolicy(actions.mean(0), {**data.info, "obs_dim": data.obs.shape[1], "achieved_dream_fraction": share})


FAMILY = families.register(families.PolicyFamily("mean-action", "the mean action (a test family)", fit_mean,
                                                 MeanActionPolicy.load))


# ---------------------------------------------------------------------- a sampler kind: one action, always
class ConstantSampler:
    def __init__(self, action: np.ndarray, noise: float, rng: np.random.Generator):
        self.action, self.noise, self.rng = action, noise, rng

    def reset(self, rows: int) -> None:
        """Stateless."""

    def act(self, obs: np.ndarray, instruction_embedding: np.ndarray, *, deterministic: bool = False,
            rows: Any = None) -> np.ndarray:
        action = np.repeat(self.action[None], len(obs), 0)
        if not deterministic and self.noise > 0:
            action = action + self.rng.normal(0.0, self.noise, action.shape)
        return np.clip(action, -1.0, 1.0).astype(np.float32)


class Constant(samplers.SamplerKind):
    name, summary = "constant", "one configured action (a test kind), + noise"
    defaults = {"action": [0.0]}  # padded with zeros to the action width

    def check(self, spec: samplers.SamplerSpec) -> None:
        action = spec.option("action")
        if not (isinstance(action, list) and action and all(isinstance(a, (int, float)) and -1 <= a <= 1
                                                            for a in action)):
            raise ConfigError(f"generate.sampler.constant.action={action!r}; give a list of numbers in [-1, 1]")

    def label(self, spec: samplers.SamplerSpec) -> str:
        return f"constant({','.join(f'{a:g}' for a in spec.option('action'))},noise={spec.noise:g})"

    def make(self, spec: samplers.SamplerSpec, ctx: samplers.SamplerContext) -> ConstantSampler:
        given = np.asarray(spec.option("action"), np.float32)[:ctx.action_dim]
        return ConstantSampler(np.pad(given, (0, ctx.action_dim - len(given))), spec.noise, ctx.rng)


SAMPLER = samplers.register(Constant())
