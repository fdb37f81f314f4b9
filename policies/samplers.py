"""Policy samplers for generation: who acts inside the dream.

Every sampler is batched and follows ``policies.base.Policy``: ``act(obs[B,O], instruction[B,C]) ->
action[B,A]`` in [-1, 1]. Exploration noise comes from the sampler's own generator (seeded per
chunk), so a chunk's dreams depend only on ``(job seed, chunk index)``.

- ``expert``: the embodiment's scripted expert + Gaussian noise, acting on *dreamed* states. It knows
  the task's solution, so it is an **oracle labeller** — its name says so in every episode's provenance.
- ``policy``: a trained policy checkpoint (e.g. the BC policy) + Gaussian noise.
- ``random``: uniform random actions (play).
- ``sb3``: a policy trained inside the dream by SB3 on the learned reward (``policies.sb3_dream``).
- ``planner``: MPC inside the dream — each step the first action of an MPPI plan in the world model
  (``dreamgen.plan.mppi``), with the trained policy as its prior, + Gaussian noise.
- ``recovery``: dreams that leave the demo path and come back — from a real demo's first frame, a
  prefix of ``recovery_steps`` (drawn per row) acted by the trained policy with ``recovery_noise``, then
  the planner brings the row back to that demo's path and follows it (``DemoPaths``; DART/CCIL's idea:
  few-demo BC fails by drifting; these dreams show the way back).
- ``retarget``: MimicGen's idea with the world model in place of the simulator — from any real start
  layout (play episodes' first frames included), the nearest demo's path is carried over to the new
  layout (``retarget_path``: the hand and object relative to the object before contact, relative to the
  goal at the end, blended in between) and the planner follows it in the dream. Only the demos are
  used, no expert.

Samplers have ``reset(rows)``, called before each batch of dreams, and ``act(..., rows=idx)`` is given
only the rows still dreaming (their indices in the batch): the planner keeps per-row state and plans
nothing for a row that has ended.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from dreamgen.errors import ConfigError
from dreamgen.plan.mppi import PlannerConfig
from dreamgen.registry import Registry
from policies.families import RandomPolicy

ENTRY_POINTS = "dreamgen.samplers"
POLICY_SETTING = "generate.sampler.policy"  # the trained (BC) policy a sampler wraps, or plans with as its prior
SB3_SETTING = "generate.sampler.sb3.checkpoint"


@dataclasses.dataclass(frozen=True)
class SamplerSpec:
    """What acts in the dream: the kind (a ``SamplerKind``'s name) and the settings the kinds read.
    ``checkpoint`` is the policy directory the kind reads (``SamplerKind.checkpoint``: "" = none)."""

    kind: str = "expert"
    noise: float = 0.1  # std of Gaussian action noise (not used by ``random``)
    checkpoint: str = ""
    # the checkpoint by content, never by where it lives (its recorded content digest; for PPO trained in the
    # dream, the name derived from its settings): what the generation job's id hashes instead of the path
    checkpoint_id: str = ""
    planner: PlannerConfig | None = None  # the kinds that plan
    recovery_steps: tuple[int, int] = (5, 20)  # recovery: prefix length drawn uniformly from [lo, hi]
    recovery_noise: float = 0.5  # recovery: std of the noise on the policy during the prefix
    recovery_track: float = 10.0  # recovery: the planner's weight on the distance to the demo path
    retarget_track: float = 10.0  # retarget: the planner's weight on the distance to the retargeted path
    # the settings of a kind with ``SamplerKind.defaults`` (``generate.sampler.<kind>.<name>``), sorted pairs
    options: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        kind = sampler_kind(self.kind)
        if not self.noise >= 0:
            raise ConfigError(f"generate.sampler.noise={self.noise}; must be >= 0")
        if kind.plans and self.planner is None:
            raise ConfigError(f"generate.sampler.kind={self.kind} needs the planner settings (section planner)")
        kind.check(self)

    @property
    def name(self) -> str:
        """The provenance label of every dream this sampler produces."""
        return sampler_kind(self.kind).label(self)

    def option(self, name: str) -> Any:
        """The kind's own setting ``name`` (``SamplerKind.defaults``, as given in config)."""
        return dict(self.options)[name]


@dataclasses.dataclass(frozen=True)
class SamplerContext:
    """What a chunk's sampler is built from: the chunk's ``task`` (``""`` for a novel instruction), its own
    ``rng``, the action width, the loaded ``policy`` (``load_sampler_policy``), the world ``model`` the planning
    kinds plan in, the task's ``demos`` (the kinds that follow them) and the embodiment (``robot``: its
    scripted expert; the parts retarget carries a demo by)."""

    task: str
    rng: np.random.Generator
    action_dim: int
    policy: Any = None
    model: Any = None
    demos: DemoPaths | None = None
    robot: Any = None


class SamplerKind:
    """One kind of sampler: what it needs and does (the class attributes), the checks of its own settings
    (``check``), the provenance label of its dreams (``label``) and its factory (``make``). Jobs ask these;
    none compares a kind's name. A new kind is a subclass registered with ``register(Kind())`` in a module
    imported before use, or installed with an entry point in group ``dreamgen.samplers``."""

    name: str = ""
    summary: str = ""
    plans = False  # plans in the world model: needs the planner settings and a model
    follows_demos = False  # follows the task's demo paths (DemoPaths from the start store)
    starts_from_demos = False  # dreams start only at demos' first frames
    needs_task = False  # acts only on a known task (a novel instruction is refused)
    oracle = False  # knows the task's solution: its dreams are labelled an oracle's
    policy_setting: str | None = None  # the config key of the checkpoint it reads (None: reads none)
    policy_required = False  # reads it always (else: only as the planner's prior, when planner.prior_samples)
    trains_in_dream = False  # its policy is trained by generate in the dream (PPO) unless one is given
    policy_family: str | None = None  # the family a given checkpoint must be (None: any state policy)
    state_only = False  # needs a state dream (refused with a camera world model)
    # the kind's own settings and their defaults, read from ``generate.sampler.<name>`` into ``SamplerSpec.options``
    # (the built-in kinds' settings are SamplerSpec's fields, which the job id has always hashed)
    defaults: dict[str, Any] = {}

    @property
    def uses_trained_policy(self) -> bool:
        """It reads the trained policy (a pipeline's round trains one before it dreams)."""
        return self.policy_setting == POLICY_SETTING

    def checkpoint(self, policy: str, planner: PlannerConfig | None, trained_in_dream: Any) -> str:
        """The checkpoint this kind reads, given ``generate.sampler.policy`` and the planner settings;
        ``trained_in_dream()`` is the path of PPO trained (or given) for the job."""
        if self.trains_in_dream:
            return str(trained_in_dream())
        if self.policy_setting is None:
            return ""
        if self.policy_required or (planner is not None and planner.prior_samples):
            return str(policy or "")
        return ""

    def options(self, given: Any) -> tuple[tuple[str, Any], ...]:
        """``generate.sampler.<name>`` (a mapping, or None) over ``defaults``; an unknown key is refused."""
        given = {} if given is None else given
        if not isinstance(given, dict) or set(given) - set(self.defaults):
            raise ConfigError(f"generate.sampler.{self.name}={given!r}; the settings of sampler kind {self.name}: "
                              f"{', '.join(self.defaults) or 'none'}")
        return tuple(sorted({**self.defaults, **given}.items()))

    def check(self, spec: SamplerSpec) -> None:
        """Refuse this kind's own bad settings (``ConfigError`` naming the field)."""

    def label(self, spec: SamplerSpec) -> str:
        return f"{self.name}:{spec.checkpoint}(noise={spec.noise:g})"

    def make(self, spec: SamplerSpec, ctx: SamplerContext) -> Any:
        raise NotImplementedError


SAMPLERS: Registry[SamplerKind] = Registry("sampler kind", ENTRY_POINTS)


def register(kind: SamplerKind) -> SamplerKind:
    return SAMPLERS.register(kind)


def sampler_kind(name: Any) -> SamplerKind:
    """The kind named ``generate.sampler.kind``, or a refusal listing the accepted ones."""
    kind = SAMPLERS.find(name)
    if kind is None:
        raise ConfigError(f"generate.sampler.kind={name!r}; accepted: {', '.join(k.name for k in SAMPLERS)}")
    return kind


class _Noisy:
    """``base.act`` (deterministic) + Gaussian noise from ``rng``, clipped to the action box."""

    def __init__(self, noise: float, rng: np.random.Generator):
        self.noise, self.rng = noise, rng

    def _finish(self, action: np.ndarray) -> np.ndarray:
        if self.noise > 0:
            action = action + self.rng.normal(0.0, self.noise, action.shape)
        return np.clip(action, -1.0, 1.0).astype(np.float32)

    def reset(self, rows: int) -> None:
        """Stateless: nothing to reset."""


class ExpertSampler(_Noisy):
    """The scripted expert of ``task`` on each row's (dreamed) state: an oracle labeller."""

    def __init__(self, expert: Any, noise: float, rng: np.random.Generator):
        super().__init__(noise, rng)
        self.expert = expert

    def act(self, obs: np.ndarray, instruction_embedding: np.ndarray, *, deterministic: bool = False,
            rows: Any = None) -> np.ndarray:
        action = np.stack([self.expert(state) for state in obs]).astype(np.float32)
        return action if deterministic else self._finish(action)


class PolicySampler(_Noisy):
    """A trained, language-conditioned policy (any ``policies`` checkpoint) plus exploration noise."""

    def __init__(self, policy: Any, noise: float, rng: np.random.Generator):
        super().__init__(noise, rng)
        self.policy = policy

    def act(self, obs: np.ndarray, instruction_embedding: np.ndarray, *, deterministic: bool = False,
            rows: Any = None) -> np.ndarray:
        action = self.policy.act(obs, instruction_embedding, deterministic=True)
        return action if deterministic else self._finish(action)


class RiskySampler:
    """The collection's deliberately risky behaviour (``dreamgen.data.collect.risky_actor``), one per row:
    dreams that go somewhere unsafe, to audit the safety head and the filter's ``unsafe:`` rejections on."""

    def __init__(self, action_dim: int, rng: np.random.Generator):
        self.action_dim, self.rng = action_dim, rng
        self.actors: list[Any] = []

    def act(self, obs: np.ndarray, instruction_embedding: np.ndarray, *, deterministic: bool = False,
            rows: Any = None) -> np.ndarray:
        rows = np.arange(len(obs)) if rows is None else np.asarray(rows, np.int64)
        return np.stack([self.actors[r](o) for r, o in zip(rows, obs, strict=True)]).astype(np.float32)

    def reset(self, rows: int) -> None:
        from dreamgen.data.collect import risky_actor

        self.actors = [risky_actor(self.rng, self.action_dim) for _ in range(rows)]


class PlannerSampler(_Noisy):
    """MPC in the dream: the planner's first action each step (+ noise); the executed action is what the
    planner's model context records."""

    def __init__(self, mpc: Any, noise: float, rng: np.random.Generator):
        super().__init__(noise, rng)
        self.mpc = mpc

    def reset(self, rows: int) -> None:
        self.mpc.reset(rows)

    def follow_dream(self, state_of: Any) -> None:
        """Plan from the dream's own rollout state of the rows (``state_of(rows) -> RowState``): a latent
        model's rows are their latent, which the observation alone does not give."""
        self.mpc.dream_state = state_of

    def act(self, obs: np.ndarray, instruction_embedding: np.ndarray, *, deterministic: bool = False,
            rows: Any = None) -> np.ndarray:
        return self._plan(obs, instruction_embedding, rows, deterministic)

    def _plan(self, obs: np.ndarray, instruction_embedding: np.ndarray, rows: Any, deterministic: bool,
              reference: Any = None) -> np.ndarray:
        """The planner's first action (+ noise unless ``deterministic``), recorded as the rows' executed one."""
        action = self.mpc.act(obs, instruction_embedding, rows=rows, record=False, reference=reference)
        action = action if deterministic else self._finish(action)
        self.mpc.record(action, rows=rows, planned=True)
        return action

    def _follow(self, paths: DemoPaths, which: np.ndarray, at: np.ndarray, obs: np.ndarray,
                instruction_embedding: np.ndarray, rows: Any, deterministic: bool) -> np.ndarray:
        """Plan toward the frames of path ``which[n]`` ahead of ``at[n]`` (the tracking term, weighted as
        ``paths`` are), plus the planner's own terms."""
        import torch

        ahead = torch.as_tensor(paths.ahead(which, at, self.mpc.planner.config.horizon))
        return self._plan(obs, instruction_embedding, rows, deterministic,
                          reference=(ahead, torch.as_tensor(paths.weight)))


class DemoPaths:
    """The successful demos of one task, as paths to return to: ``obs[T,O]`` each, and per-dim weights
    ``1/max(std, floor)`` over the demos' dynamic dims (0 for dims that never vary, and for every other
    dim). The floor keeps a dim that barely moves in this task (a quaternion the hand never turns)
    from dominating the distance with the model's tiny noise on it."""

    def __init__(self, paths: list[np.ndarray], dynamic: tuple[int, int], floor: float = 0.01):
        if not paths:
            raise ConfigError("generate.sampler.kind=recovery needs successful demos of the task in the start store "
                              "(collect expert demos, or import them)")
        self.paths = [np.asarray(p, np.float32) for p in paths]
        stacked = np.concatenate(self.paths)
        std = stacked.std(0)
        self.weight = np.zeros(stacked.shape[1], np.float32)
        dyn = slice(*dynamic)
        self.weight[dyn] = np.where(std[dyn] > 1e-6, 1.0 / np.maximum(std[dyn], floor), 0.0)
        self.starts = np.stack([p[0] for p in self.paths])

    def match(self, obs: np.ndarray) -> np.ndarray:
        """The demo each start ``obs[n,O]`` is (nearest first frame)."""
        return np.abs(obs[:, None] - self.starts[None]).max(-1).argmin(1)

    def progress(self, obs: np.ndarray, demo: np.ndarray, at: np.ndarray, window: int = 10) -> np.ndarray:
        """Per row, the nearest frame of its demo in ``[at, at + window]`` (progress never goes back)."""
        out = at.copy()
        for i, (d, t) in enumerate(zip(demo, at, strict=True)):
            path = self.paths[d][t:t + window + 1]
            out[i] = t + int(np.linalg.norm((path - obs[i]) * self.weight, axis=1).argmin())
        return out

    def ahead(self, demo: np.ndarray, at: np.ndarray, horizon: int) -> np.ndarray:
        """``[n, horizon, O]``: each row's demo frames ``at + 1 .. at + horizon`` (the last frame repeated)."""
        return np.stack([self.paths[d][np.minimum(t + 1 + np.arange(horizon), len(self.paths[d]) - 1)]
                         for d, t in zip(demo, at, strict=True)])


class RecoverySampler(PlannerSampler):
    """A perturbed prefix from the policy (``steps`` per row drawn from ``[lo, hi]``, noise ``perturb``),
    then the planner brings the row back to the demo it started from and follows it (DART/CCIL's
    corrective labels, with the world model in place of the expert): the objective tracks the demo's
    frames ahead of the row's progress, plus the planner's own terms."""

    def __init__(self, mpc: Any, policy: Any, demos: DemoPaths, steps: tuple[int, int], perturb: float,
                 noise: float, rng: np.random.Generator):
        super().__init__(mpc, noise, rng)
        self.policy, self.demos, self.steps, self.perturb = policy, demos, steps, perturb
        self.prefix = np.zeros(0, np.int64)
        self.demo = np.zeros(0, np.int64)
        self.at = np.zeros(0, np.int64)
        self.t = 0

    def reset(self, rows: int) -> None:
        super().reset(rows)
        self.prefix = self.rng.integers(self.steps[0], self.steps[1] + 1, size=rows)
        self.demo = np.full(rows, -1, np.int64)
        self.at = np.zeros(rows, np.int64)
        self.t = 0

    def act(self, obs: np.ndarray, instruction_embedding: np.ndarray, *, deterministic: bool = False,
            rows: Any = None) -> np.ndarray:
        if rows is None:
            if len(self.prefix) != len(obs):
                self.reset(len(obs))
            rows = np.arange(len(obs))
        rows = np.asarray(rows, np.int64)
        if self.t == 0:
            self.demo[rows] = self.demos.match(obs)
        self.at[rows] = self.demos.progress(obs, self.demo[rows], self.at[rows])
        action = np.zeros((len(obs), self.mpc.model.action_dim), np.float32)
        off = np.flatnonzero(self.t < self.prefix[rows])  # positions in this call
        back = np.flatnonzero(self.t >= self.prefix[rows])
        if len(off):
            pushed = self.policy.act(obs[off], instruction_embedding[off], deterministic=True)
            pushed = pushed + self.rng.normal(0.0, self.perturb, pushed.shape)
            action[off] = np.clip(pushed, -1.0, 1.0)
            self.mpc.record(action[off], rows=rows[off])
        if len(back):
            action[back] = self._follow(self.demos, self.demo[rows[back]], self.at[rows[back]], obs[back],
                                        instruction_embedding[back], rows[back], deterministic)
        self.t += 1
        return action


def retarget_path(path: np.ndarray, start: np.ndarray, *, hand: slice, obj: slice, goal: slice,
                  history: int | None, moved: float = 0.01) -> np.ndarray:
    """A demo's observations ``path[T,O]`` carried over to the layout of ``start[O]`` (MimicGen's transform).

    The hand and the object move with the object's start until the demo first moves the object (by more
    than ``moved``), then blend linearly to moving with the goal by the demo's last frame, so the approach
    is object-relative and the end goal-relative. A demo that never moves the object (reaching) is
    goal-relative throughout. ``history`` is the offset of the previous-frame copy of the dims (Meta-World
    stacks one), shifted alike. Frame 0 is ``start`` itself; the goal dims are ``start``'s throughout."""
    path = np.asarray(path, np.float32)
    out = path.copy()
    width = hand.stop - hand.start  # a layout without an object or a goal (a toy model) shifts by nothing
    d_obj = start[obj] - path[0, obj] if obj.stop > obj.start else np.zeros(width, np.float32)
    d_goal = start[goal] - path[0, goal] if goal.stop > goal.start else np.zeros(width, np.float32)
    shifted = np.linalg.norm(path[:, obj] - path[0, obj], axis=1) > moved
    steps = np.arange(len(path), dtype=np.float32)
    if shifted.any():
        contact = int(np.argmax(shifted))
        blend = np.clip((steps - contact) / max(len(path) - 1 - contact, 1), 0.0, 1.0)[:, None]
        shift = (1 - blend) * d_obj + blend * d_goal
    else:
        shift = np.broadcast_to(d_goal, (len(path), len(d_goal)))
    for part in (p for p in (hand, obj) if p.stop > p.start):
        dims = [part] + ([slice(part.start + history, part.stop + history)] if history is not None else [])
        for dim in dims:
            out[:, dim] += shift
    out[:, goal] = start[goal]
    out[0] = start
    return out


class RetargetSampler(PlannerSampler):
    """From any real start layout, the nearest demo's path carried over to it (``retarget_path``), followed
    by the planner in the dream: the tracking objective on the retargeted frames ahead of the row's
    progress, plus the planner's own terms (MimicGen, with the world model in place of the simulator)."""

    def __init__(self, mpc: Any, demos: DemoPaths, noise: float, rng: np.random.Generator, *, hand: slice,
                 obj: slice, goal: slice, history: int | None):
        super().__init__(mpc, noise, rng)
        self.demos, self.hand, self.obj, self.goal, self.history = demos, hand, obj, goal, history
        self.routes: DemoPaths | None = None
        self.at = np.zeros(0, np.int64)
        self.t = 0

    def reset(self, rows: int) -> None:
        super().reset(rows)
        self.routes, self.at, self.t = None, np.zeros(rows, np.int64), 0

    def source(self, start: np.ndarray) -> np.ndarray:
        """The demo whose object and goal lie nearest to each start's (the one that transfers best)."""
        dims = np.arange(start.shape[1])
        keys = np.r_[dims[self.obj], dims[self.goal]]
        return np.linalg.norm(start[:, None, keys] - self.demos.starts[None, :, keys], axis=-1).argmin(1)

    def act(self, obs: np.ndarray, instruction_embedding: np.ndarray, *, deterministic: bool = False,
            rows: Any = None) -> np.ndarray:
        rows = np.arange(len(obs)) if rows is None else np.asarray(rows, np.int64)
        if self.t == 0 or self.routes is None:
            if len(self.at) < rows.max() + 1:
                self.reset(int(rows.max()) + 1)
            paths = [retarget_path(self.demos.paths[d], start, hand=self.hand, obj=self.obj, goal=self.goal,
                                   history=self.history) for d, start in zip(self.source(obs), obs, strict=True)]
            full = [paths[0]] * len(self.at)
            for row, path in zip(rows, paths, strict=True):
                full[row] = path
            self.routes = DemoPaths(full, (0, obs.shape[1]))
            self.routes.weight = self.demos.weight  # distances weighted as on the demos themselves
        self.at[rows] = self.routes.progress(obs, rows, self.at[rows])
        action = self._follow(self.routes, rows, self.at[rows], obs, instruction_embedding, rows, deterministic)
        self.t += 1
        return action


def load_sampler_policy(spec: SamplerSpec) -> Any:
    """The trained policy a sampler wraps or plans with (load once per worker), else ``None``."""
    if sampler_kind(spec.kind).policy_setting is None or not spec.checkpoint:
        return None
    from policies import load_policy

    return load_policy(spec.checkpoint)


def make_mpc(model: Any, config: PlannerConfig, prior_policy: Any, *, seed: int, goal_of: Any = None) -> Any:
    """An ``MPCPolicy`` planning in ``model`` with ``prior_policy`` (any ``Policy``, or None) as its prior
    (``goal_of``: each row's goal distance from its instruction embedding, for ``planner.objective.goal``)."""
    from dreamgen.plan.mppi import MPPIPlanner
    from policies.mpc import MPCPolicy

    prior = None
    if prior_policy is not None and config.prior_samples:
        def prior(obs: np.ndarray, emb: np.ndarray) -> np.ndarray:
            return prior_policy.act(obs, emb, deterministic=True)
    return MPCPolicy(model, MPPIPlanner(model, config, prior), seed=seed, goal_of=goal_of)


def make_sampler(spec: SamplerSpec, task: str, rng: np.random.Generator, *, action_dim: int,
                 policy: Any = None, model: Any = None, demos: DemoPaths | None = None, robot: Any = None) -> Any:
    """The sampler for one chunk of ``task`` (``""`` for a novel instruction) with its own ``rng``, made by its
    kind (see ``SamplerContext`` for the rest)."""
    kind = sampler_kind(spec.kind)
    if policy is None and kind.policy_setting is not None:
        policy = load_sampler_policy(spec)
    return kind.make(spec, SamplerContext(task, rng, action_dim, policy, model, demos, robot))


class Expert(SamplerKind):
    name, summary = "expert", "the scripted expert acting in the dream, + noise"
    needs_task = oracle = True

    def label(self, spec: SamplerSpec) -> str:
        return f"oracle-expert(noise={spec.noise:g})"

    def make(self, spec: SamplerSpec, ctx: SamplerContext) -> Any:
        if not ctx.task:
            raise ConfigError("generate.sampler.kind=expert needs a known task; a novel instruction "
                              "(allow_novel=true) needs a learned sampler: policy, sb3 or random")
        if ctx.robot is None:
            raise ConfigError("generate.sampler.kind=expert needs the embodiment whose scripted expert acts")
        return ExpertSampler(ctx.robot.make_expert(ctx.task), spec.noise, ctx.rng)


class TrainedPolicy(SamplerKind):
    name, summary = "policy", "a trained policy checkpoint (generate.sampler.policy) + noise"
    policy_setting, policy_required = POLICY_SETTING, True

    def make(self, spec: SamplerSpec, ctx: SamplerContext) -> Any:
        return PolicySampler(ctx.policy, spec.noise, ctx.rng)


class Random(SamplerKind):
    name, summary = "random", "uniform random actions (play)"

    def label(self, spec: SamplerSpec) -> str:
        return "random"

    def make(self, spec: SamplerSpec, ctx: SamplerContext) -> Any:
        return RandomPolicy(ctx.action_dim, ctx.rng)


class Risky(SamplerKind):
    name, summary = "risky", "the collection's risky behaviour: full-speed random headings, half into the table"

    def label(self, spec: SamplerSpec) -> str:
        return "risky"

    def make(self, spec: SamplerSpec, ctx: SamplerContext) -> Any:
        return RiskySampler(ctx.action_dim, ctx.rng)


class PPOInDream(SamplerKind):
    name, summary = "sb3", "PPO trained in the state dream on the learned reward (or given), + noise"
    policy_setting, policy_required, trains_in_dream = SB3_SETTING, True, True
    policy_family, state_only = "sb3", True

    def make(self, spec: SamplerSpec, ctx: SamplerContext) -> Any:
        return PolicySampler(ctx.policy, spec.noise, ctx.rng)


class Planner(SamplerKind):
    name, summary = "planner", "MPPI in the world model each step, the trained policy as its prior, + noise"
    plans = True
    policy_setting = POLICY_SETTING

    def label(self, spec: SamplerSpec) -> str:
        assert spec.planner is not None
        prior = f"prior=policy:{spec.checkpoint}" if spec.checkpoint and spec.planner.prior_samples else "prior=none"
        return f"{self.name}({self.route(spec)}mppi {spec.planner.label()},{prior},noise={spec.noise:g})"

    def route(self, spec: SamplerSpec) -> str:
        """What the planner follows besides its own objective (the label's middle part)."""
        return ""

    def model_of(self, ctx: SamplerContext) -> Any:
        if ctx.model is None:
            raise ConfigError(f"generate.sampler.kind={self.name} plans in a world model; none was given")
        return ctx.model

    def goal_of(self, spec: SamplerSpec, ctx: SamplerContext) -> Any:
        """With ``planner.objective.goal`` / ``approach``: every row's goal distance is the chunk's task's
        (``GoalRule``); a task without one (or a novel instruction) is refused. None without those terms."""
        from dreamgen.plan.mppi import KNOWN_COSTS, GoalDistance

        assert spec.planner is not None
        terms = [term for term in KNOWN_COSTS if term in spec.planner.objective]
        if not terms:
            return None
        rule = ctx.robot.goal_rule(ctx.task) if ctx.robot is not None and ctx.task else None
        if rule is None:
            raise ConfigError(f"planner.objective.{terms[0]}: {ctx.task or 'a novel instruction'!r} has no goal "
                              "distance to plan toward (its success is not a part reaching a goal)")
        return lambda embeddings: GoalDistance.of([rule] * len(embeddings))

    def mpc_of(self, spec: SamplerSpec, ctx: SamplerContext, config: PlannerConfig) -> Any:
        return make_mpc(self.model_of(ctx), config, ctx.policy, seed=int(ctx.rng.integers(2**31)),
                        goal_of=self.goal_of(spec, ctx))

    def make(self, spec: SamplerSpec, ctx: SamplerContext) -> Any:
        assert spec.planner is not None
        return PlannerSampler(self.mpc_of(spec, ctx, spec.planner), spec.noise, ctx.rng)


class _Following(Planner):
    follows_demos = True

    def demos_of(self, ctx: SamplerContext) -> DemoPaths:
        if ctx.demos is None:
            raise ConfigError(f"generate.sampler.kind={self.name} follows the task's demos; no demo of the task "
                              f"{ctx.task!r} was given")
        return ctx.demos


class Recovery(_Following):
    name = "recovery"
    summary = "a perturbed prefix of the trained policy from a demo's start, then the planner back to the demo"
    starts_from_demos = policy_required = True

    def check(self, spec: SamplerSpec) -> None:
        lo, hi = spec.recovery_steps
        if not 0 <= lo <= hi or not spec.recovery_noise >= 0 or not spec.recovery_track >= 0 or not spec.checkpoint:
            raise ConfigError(f"generate.sampler.recovery.steps={list(spec.recovery_steps)} must be [lo, hi] with "
                              f"0 <= lo <= hi, .noise={spec.recovery_noise} and .track={spec.recovery_track} >= 0, "
                              "and the recovery sampler needs a policy checkpoint (generate.sampler.policy) to "
                              "leave the demo path with")

    def route(self, spec: SamplerSpec) -> str:
        return (f"prefix={spec.recovery_steps[0]}-{spec.recovery_steps[1]} steps of policy:{spec.checkpoint}"
                f"+noise {spec.recovery_noise:g},back to the demo (w_track={spec.recovery_track:g}),")

    def make(self, spec: SamplerSpec, ctx: SamplerContext) -> Any:
        assert spec.planner is not None
        demos = self.demos_of(ctx)
        mpc = self.mpc_of(spec, ctx, dataclasses.replace(spec.planner, track_weight=spec.recovery_track))
        return RecoverySampler(mpc, ctx.policy, demos, spec.recovery_steps, spec.recovery_noise, spec.noise, ctx.rng)


class Retarget(_Following):
    name = "retarget"
    summary = "the nearest demo's path carried to any start layout, followed by the planner (MimicGen's idea)"

    def check(self, spec: SamplerSpec) -> None:
        if not spec.retarget_track > 0:
            raise ConfigError(f"generate.sampler.retarget.track={spec.retarget_track}; must be > 0 (the planner "
                              "follows the retargeted demo path with this weight)")

    def route(self, spec: SamplerSpec) -> str:
        return (f"nearest demo's path carried to the start layout (object-then-goal frame,"
                f" w_track={spec.retarget_track:g}),")

    def make(self, spec: SamplerSpec, ctx: SamplerContext) -> Any:
        assert spec.planner is not None
        model, demos = self.model_of(ctx), self.demos_of(ctx)
        if ctx.robot is None:
            raise ConfigError("generate.sampler.kind=retarget needs the embodiment (its hand, object and goal "
                              "parts carry a demo to a new layout)")
        config = dataclasses.replace(spec.planner, track_weight=spec.retarget_track)
        history = model.layout.history[0] - model.layout.dynamic[0] if model.layout.history else None
        robot = ctx.robot
        return RetargetSampler(self.mpc_of(spec, ctx, config), demos,
                               spec.noise, ctx.rng, hand=robot.part("hand"), obj=robot.part("object"),
                               goal=robot.part("goal"), history=history)


for _kind in (Expert(), TrainedPolicy(), Random(), Risky(), PPOInDream(), Planner(), Recovery(), Retarget()):
    register(_kind)
