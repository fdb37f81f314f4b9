"""Batched MPPI over action sequences in a world model, with a policy prior and an uncertainty penalty.

``MPPIPlanner(model, config, prior).plan(state, embeddings, *, warm, seed) -> Plan`` plans for every row
of a ``RowState`` at once: each row is tiled into ``samples`` Gaussian candidates around its current
mean plus ``prior_samples`` candidates rolled out by the prior policy (TD-MPC2's mix), and every
horizon step of all rows × candidates is one ``model.step`` call. The objective of a candidate is

    sum_t discount^t (Σ_h objective[h] · head_h,t − penalty · disagreement_t − track_weight · |w ⊙ (obs_t − reference_t)|)

from the model's learned heads, named in config (``planner.objective``: head -> weight; by default
``reward`` 1 and ``success`` 50, and a head a model adds — a safety head, with a negative weight — is one
more entry; ``goal`` is no head: the task's own goal distance in cm on the predicted state, the known cost of a
task whose success is a distance — ``GoalDistance``, from the robot's ``goal_rule`` — for ``policy.family=mpc``
only, where each row's task is known), ``penalty`` = λ (keeps plans where the ensemble agrees) and, when a
``reference`` path is given (recovery dreams: back to the demo), the weighted distance to it. After each
iteration the mean and std are refitted to the ``elites`` best candidates, weighted by
``exp((R − R_max) / (temperature · spread))`` where ``spread`` is the elites' return std — so the
temperature does not depend on the reward's scale. The first action of the final mean is executed;
``shift(plan.mean)`` warm-starts the next step. A plan is a pure function of (state, embeddings, warm,
seed).

``members="one"`` makes a candidate cost as little of the ensemble as the objective allows: every
candidate is stepped by one member (candidate ``j`` by member ``j mod K``, so each member sees its share
of every row), and only the best ``2 × elites`` per row are stepped by all members again, where the
disagreement penalty needs their spread (with ``penalty = 0`` nothing is rescored).

Why not pytorch-mppi or torchrl's planners: pytorch-mppi 0.9.1 plans for one state at a time (its
``command(state)`` keeps one nominal sequence), and torchrl's MPPIPlanner/CEMPlanner need a TensorDict
env wrapping and a batch-locked env spec; neither takes "B rows × N candidates, one batched model call,
a per-row warm start and a policy prior" without re-writing its loop, which is most of this module.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch

from dreamgen.errors import ConfigError
from dreamgen.world_model.base import ONE_MEMBER, PROPAGATIONS, RowState, require_heads

OBJECTIVE = {"reward": 1.0, "success": 50.0}  # the objective's heads and weights unless planner.objective says
GOAL = "goal"  # planner.objective.goal: not a head; minus the task's goal distance (cm) on the predicted state
APPROACH = "approach"  # planner.objective.approach: minus the hand's distance (cm) to the part that must reach it
KNOWN_COSTS = (GOAL, APPROACH)  # objective terms from the task's goal rule, not from the model's heads
MEMBERS = ("all", "one")  # ensemble members each candidate is stepped by (see PlannerConfig.members)
Prior = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (obs[N,O], embeddings[N,C]) -> action[N,A] in [-1, 1]


@dataclasses.dataclass(frozen=True)
class PlannerConfig:
    """MPPI settings (defaults live in ``configs/config.yaml``, section ``planner``)."""

    horizon: int = 5  # steps each candidate looks ahead
    samples: int = 64  # Gaussian candidates per row
    prior_samples: int = 8  # candidates rolled out by the prior policy (0 = no prior)
    prior_noise: float = 0.1  # std of the noise on prior candidates (the first one is noise-free)
    iterations: int = 2  # refits of the sampling distribution per planned action
    elites: int = 16  # best candidates the distribution is refitted to
    temperature: float = 0.5  # of the elite weights, in units of the elites' return spread
    init_std: float = 0.5  # sampling std at the first iteration (and its upper bound)
    min_std: float = 0.05
    objective: dict[str, float] = dataclasses.field(default_factory=lambda: dict(OBJECTIVE))  # head -> weight
    penalty: float = 1.0  # λ: weight of ensemble disagreement (normalised units) in the objective
    discount: float = 0.95
    propagation: str = "mean"  # how candidates are stepped: mean of the ensemble | random member | fixed member
    track_weight: float = 0.0  # weight of the distance to a reference path, when ``plan`` is given one
    members: str = "all"  # all: every candidate through every member | one: each candidate through one member,
    #                       the best 2 x elites rescored by all (the disagreement penalty needs their spread)

    def __post_init__(self) -> None:
        checks = [
            ("horizon", self.horizon >= 1, ">= 1"), ("samples", self.samples >= 1, ">= 1"),
            ("prior_samples", self.prior_samples >= 0, ">= 0"), ("iterations", self.iterations >= 1, ">= 1"),
            ("elites", 1 <= self.elites <= self.samples + self.prior_samples, "in [1, samples + prior_samples]"),
            ("temperature", self.temperature > 0, "> 0"), ("penalty", self.penalty >= 0, ">= 0 (λ)"),
            ("init_std", self.init_std > 0, "> 0"), ("min_std", 0 < self.min_std <= self.init_std, "in (0, init_std]"),
            ("prior_noise", self.prior_noise >= 0, ">= 0"), ("discount", 0 < self.discount <= 1, "in (0, 1]"),
            ("track_weight", self.track_weight >= 0, ">= 0"),
        ]
        if not isinstance(self.objective, dict) or not self.objective:
            raise ConfigError(f"planner.objective={self.objective!r}; give head: weight pairs, e.g. "
                              "{reward: 1.0, success: 50.0}")
        for head, weight in self.objective.items():
            if not isinstance(weight, (int, float)) or isinstance(weight, bool) or not np.isfinite(weight):
                raise ConfigError(f"planner.objective.{head}={weight!r}; must be a finite number (a negative "
                                  "weight makes the head a cost)")
        # a term weighted 0 is no term: not computed, not required of the model (a preset, which cannot delete a
        # default key, switches a head off with weight 0)
        object.__setattr__(self, "objective", {h: w for h, w in self.objective.items() if w != 0})
        if not self.objective:
            raise ConfigError("planner.objective: every weight is 0; give at least one head or known cost a weight, "
                              "e.g. {reward: 1.0, success: 50.0} or +planner.objective.goal=1")
        for name, ok, accepted in checks:
            if not ok:
                raise ConfigError(f"planner.{name}={getattr(self, name)!r}; must be {accepted}")
        if self.members not in MEMBERS:
            raise ConfigError(f"planner.members={self.members!r}; accepted: {', '.join(MEMBERS)}")
        if self.propagation not in PROPAGATIONS:
            raise ConfigError(f"planner.propagation={self.propagation!r}; accepted: {', '.join(PROPAGATIONS)}")

    def label(self) -> str:
        """Short provenance text of the settings that shape a plan."""
        track = f",w_track={self.track_weight:g}" if self.track_weight else ""
        one = ",members=one" if self.members == "one" else ""
        weights = {"reward": 0.0, "success": 0.0, **self.objective}
        more = "".join(f",w_{head}={weight:g}" for head, weight in weights.items() if head not in ("reward", "success"))
        return (f"h={self.horizon},n={self.samples},prior={self.prior_samples},it={self.iterations},"
                f"elites={self.elites},T={self.temperature:g},w_rew={weights['reward']:g},"
                f"w_succ={weights['success']:g}{more},penalty={self.penalty:g}{track}{one}")

    def identity(self) -> dict[str, Any]:
        """The settings as a job id hashes them: the reward and success weights under the names they had
        before heads were named (so ids stay), any other head's under ``objective``."""
        out = dataclasses.asdict(self)
        objective = out.pop("objective")
        out["reward_weight"], out["success_weight"] = (float(objective.pop(h, 0.0)) for h in ("reward", "success"))
        if objective:
            out["objective"] = objective
        return out


class GoalDistance(NamedTuple):
    """Each row's goal rule as indices into the observation: ``part[B,P]`` (plus ``offset[B,P]``) should reach
    ``goal[B,P]``; called on ``obs[B,O]`` it gives the distance ``[B]``, in the observation's units. ``hand[B,P]``
    (plus ``hand_offset``) should reach the part first where ``reaches[B]`` (the part is an object):
    ``approach(obs)`` is that distance, 0 elsewhere."""

    part: torch.Tensor
    goal: torch.Tensor
    offset: torch.Tensor
    hand: torch.Tensor
    hand_offset: torch.Tensor
    reaches: torch.Tensor

    def __call__(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.linalg.vector_norm(obs.gather(1, self.part) + self.offset - obs.gather(1, self.goal), dim=-1)

    def approach(self, obs: torch.Tensor) -> torch.Tensor:
        gap = obs.gather(1, self.hand) + self.hand_offset - obs.gather(1, self.part)
        return torch.linalg.vector_norm(gap, dim=-1) * self.reaches

    def on(self, device: Any) -> GoalDistance:
        return GoalDistance(*(x.to(device) for x in self))

    def tile(self, n: int) -> GoalDistance:
        """Every row repeated ``n`` times in place, as ``RowState.tile``."""
        return GoalDistance(*(x.repeat_interleave(n, 0) for x in self))

    @staticmethod
    def of(rules: list[Any], device: Any = "cpu") -> GoalDistance:
        """From one ``GoalRule`` (``dreamgen.sim.base``) per row."""
        def index(parts: list[slice]) -> torch.Tensor:
            return torch.as_tensor(np.stack([np.arange(part.start, part.stop) for part in parts]), device=device)

        def values(which: int) -> torch.Tensor:
            return torch.as_tensor(np.stack([r.offsets()[which] for r in rules]), device=device)

        return GoalDistance(index([r.part for r in rules]), index([r.goal for r in rules]), values(0),
                            index([r.part if r.hand is None else r.hand for r in rules]), values(1),
                            torch.as_tensor([float(r.hand is not None) for r in rules], device=device))


class Plan(NamedTuple):
    """``action[B,A]`` to execute now, the refitted ``mean[B,H,A]`` and ``std[B,H,A]``, and ``value[B]``
    (the objective of the last iteration's best candidate)."""

    action: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    value: torch.Tensor


def shift(mean: torch.Tensor) -> torch.Tensor:
    """Warm start for the next step: the plan moved one step on, its last action repeated."""
    return torch.cat([mean[:, 1:], mean[:, -1:]], 1)


class MPPIPlanner:
    """``plan(state, embeddings[B,C], *, warm[B,H,A] | None, seed) -> Plan`` for every row of ``state``."""

    def __init__(self, model: Any, config: PlannerConfig, prior: Prior | None = None):
        if config.prior_samples and prior is None:
            raise ConfigError(f"planner.prior_samples={config.prior_samples} needs a prior policy "
                              "(generate.sampler.policy or policy.mpc.prior: a policy checkpoint), or set "
                              "planner.prior_samples=0")
        require_heads(model, [h for h in config.objective if h not in KNOWN_COSTS], "planner.objective")
        self.model, self.config, self.prior = model, config, prior
        self.transitions = 0  # candidate transitions stepped so far (for the throughput benchmark)
        self.member_steps = 0  # of which member evaluations: transitions x the members each one ran through

    def objective(self, state: RowState, actions: torch.Tensor, generator: torch.Generator,
                  reference: tuple[torch.Tensor, torch.Tensor] | None = None, *, one: bool = False,
                  goal: GoalDistance | None = None) -> torch.Tensor:
        """Discounted objective of ``actions[N,H,A]`` from the ``N`` rows of ``state``: ``[N]``.
        ``reference``: ``(path[N,H,O], weight[O])`` — the observation each row should reach at each step.
        ``one``: each row stepped by its own member only (``state.member``), without the disagreement term.
        ``goal``: each row's goal distance (the objective's ``goal`` term)."""
        c = self.config
        total = torch.zeros(len(state), device=state.obs.device)
        for t in range(actions.shape[1]):
            state, pred = self.model.step(state, actions[:, t], generator=generator,
                                          propagation=ONE_MEMBER if one else c.propagation)
            gain = torch.zeros(len(state), device=state.obs.device)
            for head, w in c.objective.items():  # a known cost is minus a distance in cm
                if head in KNOWN_COSTS and goal is not None:
                    gain = gain - 100.0 * w * (goal(state.obs) if head == GOAL else goal.approach(state.obs))
                else:
                    gain = gain + w * pred.head(head)
            if not one:
                gain = gain - c.penalty * pred.disagreement
            if reference is not None and c.track_weight:
                path, weight = reference
                gain = gain - c.track_weight * torch.linalg.vector_norm((state.obs - path[:, t]) * weight, dim=-1)
            total += c.discount ** t * torch.nan_to_num(gain, nan=-1e6, posinf=-1e6, neginf=-1e6)
        self.transitions += len(state) * actions.shape[1]
        self.member_steps += len(state) * actions.shape[1] * (1 if one else self.model.members)
        return total

    def prior_candidates(self, state: RowState, embeddings: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """``[B,P,H,A]``: the prior policy rolled through the model from each row, ``P`` times (the first
        noise-free, the rest with ``prior_noise``)."""
        c = self.config
        assert self.prior is not None
        rows, p = len(state), c.prior_samples
        tiled = state.tile(p)
        emb = embeddings.repeat_interleave(p, 0).cpu().numpy()
        noise = torch.randn(rows, p, c.horizon, self.model.action_dim, generator=generator, device=state.obs.device)
        noise[:, 0] = 0.0
        out = []
        for t in range(c.horizon):
            base = torch.as_tensor(self.prior(tiled.obs.cpu().numpy(), emb), dtype=torch.float32,
                                   device=state.obs.device)
            action = (base + c.prior_noise * noise[:, :, t].reshape(rows * p, -1)).clamp(-1.0, 1.0)
            out.append(action)
            tiled, _ = self.model.step(tiled, action, generator=generator, propagation=c.propagation)
        self.transitions += rows * p * c.horizon
        self.member_steps += rows * p * c.horizon * self.model.members
        return torch.stack(out, 1).reshape(rows, p, c.horizon, -1)

    @torch.no_grad()
    def plan(self, state: RowState, embeddings: Any, *, warm: torch.Tensor | None = None,
             warm_rows: torch.Tensor | None = None, seed: int = 0,
             reference: tuple[torch.Tensor, torch.Tensor] | None = None, goal: GoalDistance | None = None) -> Plan:
        """Plan every row of ``state``. ``warm[B,H,A]``: the previous step's shifted mean; ``warm_rows[B]``
        (bool) says which rows have one (default: all when ``warm`` is given). A row without one starts
        from its noise-free prior rollout (or zeros without a prior). ``reference``: ``(path[B,H,O],
        weight[O])``, the observations to track (``track_weight``). ``goal``: each row's goal distance, which
        ``planner.objective.goal`` needs."""
        c = self.config
        known = [term for term in KNOWN_COSTS if term in c.objective]
        if known and goal is None:
            raise ConfigError(f"planner.objective.{known[0]} plans toward each row's goal, and this planner was given "
                              "none; it is for policy.family=mpc on tasks whose success is a distance to a goal")
        dev = state.obs.device
        generator = torch.Generator(device=dev)
        generator.manual_seed(int(seed))
        rows, act_dim = len(state), self.model.action_dim
        embeddings = torch.as_tensor(embeddings, dtype=torch.float32, device=dev)
        prior = self.prior_candidates(state, embeddings, generator) if c.prior_samples else None
        mean = prior[:, 0].clone() if prior is not None else torch.zeros(rows, c.horizon, act_dim, device=dev)
        if warm is not None:
            use = torch.ones(rows, dtype=torch.bool, device=dev) if warm_rows is None else warm_rows.to(dev)
            mean[use] = warm.to(dev)[use]
        std = torch.full_like(mean, c.init_std)
        n = c.samples + c.prior_samples
        one = c.members == "one" and self.model.members > 1
        # one: candidate j of every row through member j mod K, so each member sees its share of every row
        tiled = self.model.spread(state, n) if one else state.tile(n)
        rescore = min(n, 2 * c.elites)  # candidates the full ensemble scores after a one-member pass
        base_reference = None if reference is None else (reference[0].to(dev), reference[1].to(dev))

        def reference_for(k: int) -> tuple[torch.Tensor, torch.Tensor] | None:
            return None if base_reference is None else (base_reference[0].repeat_interleave(k, 0), base_reference[1])

        full_reference = reference_for(n)
        goals = {k: goal.on(dev).tile(k) for k in {n, rescore}} if goal is not None else {}
        for _ in range(c.iterations):
            eps = torch.randn(rows, c.samples, c.horizon, act_dim, generator=generator, device=dev)
            candidates = (mean[:, None] + std[:, None] * eps).clamp(-1.0, 1.0)
            if prior is not None:
                candidates = torch.cat([candidates, prior], 1)
            value = self.objective(tiled, candidates.reshape(rows * n, c.horizon, act_dim), generator,
                                   full_reference, one=one, goal=goals.get(n)).reshape(rows, n)
            if one and c.penalty > 0:  # the best by one member each, rescored with the penalty by all members
                _, pick = value.topk(rescore, dim=1)
                candidates = candidates[torch.arange(rows, device=dev)[:, None], pick]
                value = self.objective(state.tile(rescore), candidates.reshape(rows * rescore, c.horizon, act_dim),
                                       generator, reference_for(rescore), goal=goals.get(rescore)).reshape(rows, rescore)
            elite_value, index = value.topk(c.elites, dim=1)
            elites = candidates[torch.arange(rows, device=dev)[:, None], index]  # [B,E,H,A]
            spread = elite_value.std(1, keepdim=True).clamp_min(1e-6) if c.elites > 1 else torch.ones_like(elite_value)
            weight = torch.softmax((elite_value - elite_value[:, :1]) / (c.temperature * spread), 1)[..., None, None]
            mean = (weight * elites).sum(1)
            std = (weight * (elites - mean[:, None]) ** 2).sum(1).sqrt().clamp(c.min_std, c.init_std)
        return Plan(mean[:, 0].clone(), mean, std, elite_value[:, 0])
