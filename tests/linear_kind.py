"""A world-model kind, a head and a policy family that no library file knows: registered here, used by
config alone.

``linear``: the next change of the dynamic dims and the reward are a least-squares linear map of
``[observation, action, 1]``; success and done are the training data's base rates. It adds one head,
``still``: the probability that the step barely moved the robot (``exp(-|Δ| / scale)``), so a test can end
dreams on it (``dream.done_head=still``) and plan with it (``+planner.objective.still=<weight>``).
``mean-action``: a downstream policy family that acts with the mean action of its training mix.
Importing this module registers both (``dreamgen.world_model.kinds.register``, ``policies.families.register``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from dreamgen.world_model import kinds
from dreamgen.world_model.base import HEADS, InstructionTable, ObsLayout, Prediction, StepsRows
from dreamgen.world_model.fit import transitions
from policies import families

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
