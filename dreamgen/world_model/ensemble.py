"""A probabilistic ensemble of MLPs (PETS/MBPO style) conditioned on the instruction embedding.

All members run in one fused call: weights are ``[K, in, out]`` and every layer is one
``torch.baddbmm`` over the member axis. The instruction enters the first layer as a per-episode bias
(``condition``), so a step costs only the state/action part of the network. Training and prediction
share one forward; prediction feeds every member the same input (an expanded view), keeps only the
outputs it needs and runs the activations in place.

Outputs per member (normalised units): Gaussian mean and log-variance over ``[Δ dynamic dims, reward]``,
then a success logit and a done logit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from dreamgen.world_model.base import (
    HEADS,
    ONE_MEMBER,
    PROPAGATIONS,
    InstructionTable,
    ObsLayout,
    Prediction,
    StepsRows,
)

_BLOCK = 1024  # rows per inference block: bounds the activations of all members at large batches
Activation = Callable[[torch.Tensor], torch.Tensor]
# name -> (activation, the same in place: inference reuses each layer's output buffer)
ACTIVATIONS: dict[str, tuple[Activation, Activation]] = {
    "silu": (nn.functional.silu, lambda h: nn.functional.silu(h, inplace=True)),
    "hardswish": (nn.functional.hardswish, lambda h: nn.functional.hardswish(h, inplace=True)),
    "relu": (torch.relu, torch.relu_),
    "tanh": (torch.tanh, torch.tanh_),
}


CONTACT_AT = 0.5  # the contact probability at which the gated dims move (the prediction's and disagreement's)


@dataclasses.dataclass(frozen=True)
class EnsembleConfig:
    """Architecture and training settings (defaults live in ``configs/config.yaml``)."""

    members: int = 7  # members trained
    elites: int = 5  # best members on held-out episodes kept for prediction
    hidden: int = 128  # width of each hidden layer
    layers: int = 3  # hidden layers per member
    activation: str = "silu"
    lr: float = 1e-3
    weight_decay: float = 1e-5
    batch_size: int = 256  # transitions per member per gradient step
    max_epochs: int = 80
    patience: int = 15  # epochs without a member improving by > 1% before stopping
    action_history: int = 4  # previous actions fed as input (the hand chases a hidden, action-integrated target)
    # a contact gate on the dynamic dims [lo, hi) (an object): a "contact" head predicts whether they move this
    # step (|Δ| > gate_mm), their Δ is learned from the steps where they do and predicted only where the head
    # says so (>= 0.5); None: no gate
    gate: tuple[int, int] | None = None
    gate_mm: float = 1.0

    def __post_init__(self) -> None:
        if self.gate is not None:
            object.__setattr__(self, "gate", (int(self.gate[0]), int(self.gate[1])))
            if not 0 <= self.gate[0] < self.gate[1]:
                raise ValueError(f"gate={self.gate}; must be dims [lo, hi) of the dynamic state with lo < hi")
        if not self.gate_mm > 0:
            raise ValueError(f"gate_mm={self.gate_mm}; must be > 0")
        if self.action_history < 0:
            raise ValueError(f"action_history={self.action_history}; must be >= 0")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation {self.activation!r}; accepted: {sorted(ACTIVATIONS)}")


class Normaliser(NamedTuple):
    mean: torch.Tensor
    std: torch.Tensor

    @classmethod
    def fit(cls, x: np.ndarray, *, constant: float = 1.0) -> Normaliser:
        """Mean and std of each column; a column that does not vary (std < 1e-6) gets std ``constant``: 1 for
        an input (it passes through unscaled), 0 for a target (the model predicts its mean, exactly)."""
        std = x.std(0)
        std = np.where(std < 1e-6, constant, std)
        return cls(torch.as_tensor(x.mean(0), dtype=torch.float32), torch.as_tensor(std, dtype=torch.float32))

    def scale(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` in normalised units (a column with std 0: ``x - mean``, which is 0 on the data it was fitted to)."""
        return (x - self.mean) / torch.where(self.std > 0, self.std, torch.ones_like(self.std))


class EnsembleMLP(nn.Module):
    """``K`` independent MLPs evaluated together. ``forward(x[K,B,I] or x[B,I], cond_bias[K,B,H]) -> [K,B,out]``."""

    def __init__(self, members: int, in_dim: int, cond_dim: int, hidden: int, layers: int, out_dim: int,
                 activation: str, n_gauss: int):
        super().__init__()
        dims = [in_dim] + [hidden] * layers + [out_dim]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for fan_in, fan_out in zip(dims[:-1], dims[1:], strict=True):
            bound = 1.0 / np.sqrt(fan_in)
            self.weights.append(nn.Parameter(torch.empty(members, fan_in, fan_out).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.zeros(members, 1, fan_out)))
        self.w_cond = nn.Parameter(torch.empty(members, cond_dim, hidden).uniform_(-1 / np.sqrt(cond_dim),
                                                                                   1 / np.sqrt(cond_dim)))
        self.max_logvar = nn.Parameter(torch.full((1, 1, n_gauss), 0.5))
        self.min_logvar = nn.Parameter(torch.full((1, 1, n_gauss), -10.0))
        self.act, self.act_ = ACTIVATIONS[activation]
        self.n_gauss = n_gauss

    def condition(self, cond: torch.Tensor) -> torch.Tensor:
        """``cond[B,C]`` or ``[K,B,C]`` -> first-layer bias ``[K,B,H]`` (includes the layer's own bias)."""
        if cond.dim() == 2:
            cond = cond.expand(self.w_cond.shape[0], *cond.shape)
        return torch.baddbmm(self.biases[0], cond, self.w_cond)

    def forward(self, x: torch.Tensor, cond_bias: torch.Tensor, out_cols: torch.Tensor | None = None) -> torch.Tensor:
        """``x[K,B,I]`` (one batch per member, training) or ``x[B,I]`` (shared by every member, inference)
        -> ``[K,B,out]``, or only the ``out_cols`` outputs.

        Without autograd the activations run in place and rows go through in cache-sized blocks.
        """
        w_last, b_last = self.weights[-1], self.biases[-1]
        if out_cols is not None:
            w_last, b_last = w_last[:, :, out_cols], b_last[:, :, out_cols]
        if torch.is_grad_enabled():
            return self._layers(x, cond_bias, w_last, b_last, inplace=False)
        rows = x.shape[-2]
        if rows <= _BLOCK:
            return self._layers(x, cond_bias, w_last, b_last, inplace=True)
        out = x.new_empty(w_last.shape[0], rows, w_last.shape[2])
        for start in range(0, rows, _BLOCK):
            block = slice(start, start + _BLOCK)
            out[:, block] = self._layers(x[..., block, :], cond_bias[:, block], w_last, b_last, inplace=True)
        return out

    def _layers(self, x: torch.Tensor, cond_bias: torch.Tensor, w_last: torch.Tensor, b_last: torch.Tensor,
                inplace: bool) -> torch.Tensor:
        """One ``baddbmm`` per layer over the member axis; a shared ``x[B,I]`` is an expanded view, never copied."""
        act = self.act_ if inplace else self.act
        h = act(torch.baddbmm(cond_bias, x if x.dim() == 3 else x.expand(w_last.shape[0], *x.shape), self.weights[0]))
        for weight, bias in zip(self.weights[1:-1], self.biases[1:-1], strict=True):
            h = act(torch.baddbmm(bias, h, weight))
        return torch.baddbmm(b_last, h, w_last)

    def split(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean, soft-bounded log-variance, success logit, done logit."""
        g = self.n_gauss
        mean, logvar = out[..., :g], out[..., g:2 * g]
        logvar = self.max_logvar - nn.functional.softplus(self.max_logvar - logvar)
        logvar = self.min_logvar + nn.functional.softplus(logvar - self.min_logvar)
        return mean, logvar, out[..., 2 * g], out[..., 2 * g + 1]

    def keep(self, members: list[int]) -> None:
        """Drop every member not in ``members`` (in place), e.g. to keep only the elites."""
        index = torch.as_tensor(members)
        for plist in (self.weights, self.biases):
            for i, p in enumerate(plist):
                plist[i] = nn.Parameter(p.data[index].clone())
        self.w_cond = nn.Parameter(self.w_cond.data[index].clone())


class EnsembleWorldModel(StepsRows):
    """An ensemble world model with its normalisers and instruction table; implements ``WorldModel``."""

    def __init__(self, config: EnsembleConfig, layout: ObsLayout, action_dim: int,
                 instructions: InstructionTable, obs_norm: Normaliser, vel_norm: Normaliser,
                 target_norm: Normaliser,
                 members: int | None = None, disagreement_bound: float = float("inf"),
                 info: dict[str, Any] | None = None, device: str = "cpu",
                 bounds: tuple[torch.Tensor, torch.Tensor] | None = None, gated_disagreement: bool = True):
        self.config = config
        self.layout = layout
        self.action_dim = action_dim
        self.instructions = instructions
        self.cond_dim = int(instructions.embeddings.shape[1])
        self.members = members if members is not None else config.members
        self.disagreement_bound = float(disagreement_bound)
        # with a gate, each member's gated dims count in disagreement as that member predicts them (its Δ where
        # its contact head says they move, no change where it does not): their Δ is trained only on steps where
        # they move, so on other steps the members' raw Δ is untrained noise that the prediction never uses.
        # False: every member's raw Δ (checkpoints written before 2026-12-06, whose bound was calibrated so)
        self.gated_disagreement = bool(gated_disagreement) and config.gate is not None
        self.info = dict(info or {})
        self.device = torch.device(device)
        self.context_dim = config.action_history * action_dim  # previous actions, newest first
        n_gauss = layout.n_dynamic + 1  # Δ dynamic dims + reward
        in_dim = layout.obs_dim + (layout.n_dynamic if layout.history else 0) + action_dim + self.context_dim
        gated = config.gate is not None
        if gated and config.gate[1] > layout.n_dynamic:  # type: ignore[index]
            raise ValueError(f"gate={config.gate}: the layout {layout.name} has {layout.n_dynamic} dynamic dims")
        # success_lower: the least confident member's success (pessimistic where members disagree)
        self.heads = (*HEADS, "success_lower", *(["contact"] if gated else []))
        self.net = EnsembleMLP(self.members, in_dim, self.cond_dim, config.hidden,
                               config.layers, 2 * n_gauss + 2 + gated, config.activation, n_gauss).to(self.device)
        # prediction needs the means and the logits (success, done, and the gate's), not the log-variances
        logits = [2 * n_gauss, 2 * n_gauss + 1, *([2 * n_gauss + 2] if gated else [])]
        self._out_cols = torch.cat([torch.arange(n_gauss), torch.tensor(logits)]).to(self.device)
        self.obs_norm = Normaliser(*(t.to(self.device) for t in obs_norm))
        self.vel_norm = Normaliser(*(t.to(self.device) for t in vel_norm))
        self.target_norm = Normaliser(*(t.to(self.device) for t in target_norm))
        # the dynamic dims that change in the training data: one that never did (an object's orientation in
        # tasks that never turn it) is predicted as its mean change and has no say in disagreement
        self._moves = (self.target_norm.std[:layout.n_dynamic] > 0).to(torch.float32)
        # the range of each dynamic dim in the training data: a prediction is clamped into it (a gripper
        # closed past its stop or a hand through the table is never a state the robot can be in)
        self.bounds = None if bounds is None else tuple(t.to(self.device, torch.float32) for t in bounds)
        self.risk: Any = None  # the safety head (dreamgen.world_model.risk.RiskHead), when trained

    def attach_risk(self, head: Any) -> None:
        """Predict with the safety ``head`` too: its heads (``risk``, ``risk_<event>``, ...) join every prediction."""
        self.risk = head.to(self.device).eval()
        self.heads = (*self.heads, *head.heads)

    # ------------------------------------------------------------------ cost
    def flops_per_transition(self) -> int:
        """Multiply-adds x 2 of one step for one sample across all members (conditioning excluded)."""
        weights = self.net.weights
        per_member = sum(int(w.shape[1] * w.shape[2]) for w in weights[:-1])
        per_member += int(weights[-1].shape[1]) * len(self._out_cols)
        return 2 * self.members * per_member

    # ------------------------------------------------------------------ prediction
    def inputs(self, obs: torch.Tensor, action: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """Network input: normalised obs, normalised last-step velocity of the dynamic dims, action, and
        the ``context`` of previous actions ``[..., context_dim]`` (zeros = at rest, as at an episode start)."""
        parts = [(obs - self.obs_norm.mean) / self.obs_norm.std,
                 (self.layout.velocity(obs) - self.vel_norm.mean) / self.vel_norm.std, action]
        if self.context_dim:
            parts.append(context if context is not None else action.new_zeros(*action.shape[:-1], self.context_dim))
        return torch.cat(parts, dim=-1)

    @torch.no_grad()
    def condition(self, cond: torch.Tensor) -> torch.Tensor:
        return self.net.condition(cond.to(self.device, torch.float32))

    @torch.no_grad()
    def predict(self, obs: torch.Tensor, action: torch.Tensor, cond: Any, *,
                generator: torch.Generator | None = None, propagation: str = "random",
                members: torch.Tensor | None = None, context: torch.Tensor | None = None) -> Prediction:
        if propagation not in (*PROPAGATIONS, ONE_MEMBER):
            raise ValueError(f"propagation {propagation!r}; accepted: {(*PROPAGATIONS, ONE_MEMBER)}")
        batch = obs.shape[0]
        cond_bias = cond if cond.dim() == 3 else self.net.condition(cond)
        x = self.inputs(obs, action, context)
        n_dyn = self.layout.n_dynamic
        if propagation == ONE_MEMBER:
            if members is None:
                raise ValueError(f'propagation="{ONE_MEMBER}" needs members[B]')
            own = self._own_member(x, cond_bias, members)
            target = torch.addcmul(self.target_norm.mean, own[:, :n_dyn + 1], self.target_norm.std)
            probs = torch.sigmoid(own[:, n_dyn + 1:])
            return self._prediction(obs, target, probs, torch.full((batch,), float("nan"), device=self.device),
                                    probs[:, 0], self._risk(x, None))
        out = self.net(x, cond_bias, self._out_cols)
        mean = out[..., :n_dyn + 1]  # normalised Δ dynamic dims and reward, per member
        centre = mean.mean(0)
        every = torch.sigmoid(out[..., n_dyn + 1:])  # [K, B, 2 or 3] per member
        disagreement = self._disagreement(mean[..., :n_dyn], every)
        if propagation == "mean" or self.members == 1:
            chosen = centre
        else:
            if propagation == "random":
                members = torch.randint(self.members, (batch,), generator=generator, device=self.device)
            elif members is None:
                raise ValueError('propagation="fixed" needs members[B]')
            chosen = mean[members, torch.arange(batch, device=self.device)]
        target = torch.addcmul(self.target_norm.mean, chosen, self.target_norm.std)
        probs = every.mean(0)  # success, done (contact), averaged over members
        return self._prediction(obs, target, probs, disagreement, every[..., 0].amin(0), self._risk(x, disagreement))

    def _risk(self, x: torch.Tensor, disagreement: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """The safety head's predictions on inputs ``x`` (none without one); unsure also where the dynamics'
        ``disagreement`` passes the halting bound (out of distribution)."""
        if self.risk is None:
            return {}
        heads = self.risk.predict_heads(x)
        if disagreement is not None:
            heads["risk_unsure"] = torch.maximum(heads["risk_unsure"], (disagreement > self.disagreement_bound).float())
        return heads

    def _disagreement(self, delta: torch.Tensor, every: torch.Tensor) -> torch.Tensor:
        """``[B]``: the largest distance of a member's normalised Δ ``delta[K, B, D]`` from the members' mean,
        over the dims that move; with a gate, each member's gated dims as it would predict them (``every``: its
        success, done and contact probabilities ``[K, B, 3]``)."""
        if self.gated_disagreement:
            gate = slice(*self.config.gate)  # type: ignore[misc]
            at_rest = -self.target_norm.mean[gate] / self.target_norm.std[gate]  # Δ = 0, normalised
            delta = delta.clone()
            delta[..., gate] = torch.where(every[..., 2:3] >= CONTACT_AT, delta[..., gate], at_rest)
        return torch.linalg.vector_norm((delta - delta.mean(0)) * self._moves, dim=-1).amax(0)

    def _prediction(self, obs: torch.Tensor, target: torch.Tensor, probs: torch.Tensor,
                    disagreement: torch.Tensor, success_lower: torch.Tensor,
                    risk: dict[str, torch.Tensor] | None = None) -> Prediction:
        """The next observation (clamped into the training range) and the heads, from the de-normalised
        ``target[B, D+1]`` (Δ dynamic dims, reward) and ``probs[B, 2 or 3]`` (success, done; contact, gated);
        ``success_lower[B]``: the least confident member's success; ``risk``: the safety head's heads."""
        n_dyn = self.layout.n_dynamic
        heads = {"reward": target[:, n_dyn], "success": probs[:, 0], "done": probs[:, 1],
                 "success_lower": success_lower}
        if self.config.gate is not None:  # the gated dims move only where the contact head says they do
            heads["contact"] = probs[:, 2]
            gate = slice(*self.config.gate)
            target = target.clone()
            target[:, gate] = torch.where(probs[:, 2:3] >= CONTACT_AT, target[:, gate], torch.zeros_like(target[:, gate]))
        heads.update(risk or {})
        next_obs = self.layout.compose(obs, target[:, :n_dyn])
        if self.bounds is not None:  # into the training range, or no further out than the row already is
            dyn = slice(*self.layout.dynamic)
            now = obs[:, dyn]
            next_obs[:, dyn] = torch.clamp(next_obs[:, dyn], torch.minimum(self.bounds[0], now),
                                           torch.maximum(self.bounds[1], now))
        return Prediction(next_obs, heads, disagreement)

    def _own_member(self, x: torch.Tensor, cond_bias: torch.Tensor, members: torch.Tensor) -> torch.Tensor:
        """``[B, out]``: row ``b`` through member ``members[b]`` only. Rows are grouped by member (padded to
        the largest group) so every member runs one batched pass over its own rows."""
        rows, k = x.shape[0], self.members
        members = members.to(self.device).long()
        order = torch.argsort(members, stable=True)
        counts = torch.bincount(members, minlength=k)
        starts = torch.cumsum(counts, 0) - counts
        sorted_members = members[order]
        slot = torch.arange(rows, device=self.device) - starts[sorted_members]  # position within its group
        index = torch.full((k, int(counts.max())), int(order[0]), dtype=torch.long, device=self.device)
        index[sorted_members, slot] = order
        out = self.net(x[index], cond_bias[torch.arange(k, device=self.device)[:, None], index], self._out_cols)
        result = out.new_empty(rows, out.shape[-1])
        result[order] = out[sorted_members, slot]
        return result
