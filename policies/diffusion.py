"""lerobot's Diffusion Policy, state-only, on the capped real + dream mix (``policy.family=diffusion``).

lerobot's own ``DiffusionPolicy`` and its pre/post processors (normalisation by statistics of the real frames),
configured from the embodiment's layout: ``observation.state`` is the robot's own part
(``policy.diffusion.state_part``, e.g. Meta-World's hand), ``observation.environment_state`` every other
observation dim followed by the instruction embedding — the task reaches the policy as a state feature, so one
policy serves every task as BC's does. Training windows (``n_obs_steps`` observations, ``horizon`` actions,
copy-padded at the episode's ends with lerobot's ``action_is_pad``) are cut around the frames
``CappedMixSampler`` draws, so the dream cap holds per batch exactly as for BC, and the step budget is fixed
the same way (``fit_on_mix``). Acting is lerobot's action chunking, kept per episode: the last
``n_obs_steps`` observations (the first repeated at the start), ``horizon`` actions denoised, ``n_action_steps``
of them executed, then a new chunk. Sampling starts from noise of the policy's own generator (DDIM by
default: the same start and seed give the same actions).

The checkpoint directory holds lerobot's ``save_pretrained`` of the policy and of both processors under
``lerobot/`` (safetensors + JSON), and ``policy.json``: the split, the settings, the provenance and a
``content_sha256`` over every file under ``lerobot/`` — an edited or damaged file is refused by name.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dreamgen.errors import CheckpointError, ConfigError

KIND = "diffusion"
LEROBOT = "lerobot"  # the sub-folder lerobot's save_pretrained writes
SPEC = "policy.json"
MAKE = "train one with `dreamgen train-policy policy.family=diffusion`"
STATE, ENV, ACTION = "observation.state", "observation.environment_state", "action"


@dataclasses.dataclass(frozen=True)
class DiffusionSettings:
    """``policy.diffusion.*``: the split, the chunking, the U-Net's size and the training budget."""

    state_part: str = "hand"  # the embodiment's part that is the robot's own state
    n_obs_steps: int = 2
    horizon: int = 16
    n_action_steps: int = 8
    down_dims: tuple[int, ...] = (32, 64, 128)
    kernel_size: int = 5
    n_groups: int = 8
    step_embed_dim: int = 64
    train_timesteps: int = 100
    inference_steps: int = 10
    scheduler: str = "DDIM"
    epochs: int = 300
    lr: float = 3.0e-4

    @classmethod
    def from_config(cls, node: Any) -> DiffusionSettings:
        fields = {f.name for f in dataclasses.fields(cls)}
        given = dict(node or {})
        unknown = sorted(set(given) - fields)
        if unknown:
            raise ConfigError(f"policy.diffusion.{unknown[0]} is not a setting; accepted: {', '.join(sorted(fields))}")
        if "down_dims" in given:
            given["down_dims"] = tuple(int(d) for d in given["down_dims"])
        return cls(**given)

    def check(self) -> None:
        """Refuse settings lerobot would reject deep inside, naming the field."""
        ints = {"n_obs_steps": self.n_obs_steps, "horizon": self.horizon, "n_action_steps": self.n_action_steps,
                "kernel_size": self.kernel_size, "n_groups": self.n_groups, "step_embed_dim": self.step_embed_dim,
                "train_timesteps": self.train_timesteps, "inference_steps": self.inference_steps,
                "epochs": self.epochs}
        for name, value in ints.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"policy.diffusion.{name}={value!r}; must be an integer >= 1")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise ConfigError(f"policy.diffusion.lr={self.lr!r}; must be > 0")
        if not self.down_dims or any(d < 1 or d % self.n_groups for d in self.down_dims):
            raise ConfigError(f"policy.diffusion.down_dims={list(self.down_dims)}; give one or more widths, each a "
                              f"multiple of policy.diffusion.n_groups={self.n_groups}")
        factor = 2 ** len(self.down_dims)
        if self.horizon % factor:
            raise ConfigError(f"policy.diffusion.horizon={self.horizon} must be a multiple of {factor} (2 ** the "
                              f"{len(self.down_dims)} widths of policy.diffusion.down_dims)")
        if self.n_action_steps > self.horizon - self.n_obs_steps + 1:
            raise ConfigError(f"policy.diffusion.n_action_steps={self.n_action_steps} must be <= horizon - "
                              f"n_obs_steps + 1 = {self.horizon - self.n_obs_steps + 1}")
        if self.inference_steps > self.train_timesteps:
            raise ConfigError(f"policy.diffusion.inference_steps={self.inference_steps} must be <= "
                              f"train_timesteps={self.train_timesteps}")
        if self.scheduler not in ("DDIM", "DDPM"):
            raise ConfigError(f"policy.diffusion.scheduler={self.scheduler!r}; accepted: DDIM, DDPM")


def state_split(robot: Any, part: str, obs_dim: int, *, field: str = "policy.diffusion.state_part"
                ) -> tuple[list[int], list[int]]:
    """``(robot state dims, environment dims)`` of an observation: ``part`` of ``robot`` and the rest."""
    parts = getattr(robot, "parts", {}) or {}
    if part not in parts:
        raise ConfigError(f"{field}={part!r} is not a part of embodiment {robot.name}; its "
                          f"parts: {', '.join(parts) or 'none'} (a robot without a simulator names them in robot.parts)")
    state = list(range(obs_dim))[parts[part]]
    env = [d for d in range(obs_dim) if d not in state]
    if not env:
        raise ConfigError(f"{field}={part} covers every observation dim of {robot.name}, "
                          "which leaves no environment state; Diffusion Policy (state-only) needs one: name a "
                          "smaller part")
    return state, env


def windows(lengths: Any, n_obs: int, horizon: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every frame of episodes of ``lengths`` laid end to end: the frames of its ``n_obs`` observations
    ``[N, n_obs]`` and its ``horizon`` actions ``[N, horizon]`` (from the first observation on), clamped into
    its own episode (lerobot's copy padding), and which actions are padding ``[N, horizon]``."""
    n = np.asarray(lengths, dtype=np.int64)
    ends = np.cumsum(n)
    episode = np.repeat(np.arange(len(n)), n)
    first, last = (ends - n)[episode][:, None], (ends - 1)[episode][:, None]
    frame = np.arange(int(ends[-1]) if len(ends) else 0)[:, None]
    obs = np.clip(frame + np.arange(1 - n_obs, 1)[None], first, last)
    raw = frame + np.arange(1 - n_obs, 1 - n_obs + horizon)[None]
    return obs, np.clip(raw, first, last), (raw < first) | (raw > last)


def _lerobot_config(settings: DiffusionSettings, state_dim: int, env_dim: int, action_dim: int) -> Any:
    from lerobot.configs.types import FeatureType, PolicyFeature
    from lerobot.policies.diffusion.configuration_diffusion import DiffusionConfig

    s = settings
    return DiffusionConfig(
        n_obs_steps=s.n_obs_steps, horizon=s.horizon, n_action_steps=s.n_action_steps,
        drop_n_last_frames=max(0, s.horizon - s.n_action_steps - s.n_obs_steps + 1),
        input_features={STATE: PolicyFeature(type=FeatureType.STATE, shape=(state_dim,)),
                        ENV: PolicyFeature(type=FeatureType.ENV, shape=(env_dim,))},
        output_features={ACTION: PolicyFeature(type=FeatureType.ACTION, shape=(action_dim,))},
        down_dims=tuple(s.down_dims), kernel_size=s.kernel_size, n_groups=s.n_groups,
        diffusion_step_embed_dim=s.step_embed_dim, noise_scheduler_type=s.scheduler,
        num_train_timesteps=s.train_timesteps, num_inference_steps=s.inference_steps,
        optimizer_lr=s.lr, device="cpu", push_to_hub=False)


def _stats(values: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """lerobot's dataset statistics of each feature (min, max, mean, std over frames)."""
    return {key: {"min": v.min(0), "max": v.max(0), "mean": v.mean(0), "std": v.std(0), "count": np.array([len(v)])}
            for key, v in values.items()}


class DiffusionPolicy:
    """A trained lerobot Diffusion Policy behind ``policies.base.Policy``, with per-episode action chunks:
    ``reset(rows)`` begins episodes, ``act(..., rows=idx)`` addresses the still-running ones."""

    kind = KIND

    def __init__(self, policy: Any, preprocessor: Any, postprocessor: Any, settings: DiffusionSettings,
                 state_dims: list[int], env_dims: list[int], obs_dim: int, cond_dim: int, action_dim: int,
                 info: dict[str, Any] | None = None, seed: int = 0):
        self.policy, self.preprocessor, self.postprocessor = policy, preprocessor, postprocessor
        self.settings, self.state_dims, self.env_dims = settings, list(state_dims), list(env_dims)
        self.obs_dim, self.cond_dim, self.action_dim = obs_dim, cond_dim, action_dim
        self.info, self.seed = dict(info or {}), seed
        self.reset(0)

    # ------------------------------------------------------------------ the features lerobot sees
    def features(self, obs: np.ndarray, cond: np.ndarray) -> dict[str, torch.Tensor]:
        """``observation.state`` and ``observation.environment_state`` (the rest + the instruction) of
        observations ``[..., O]`` with instruction embeddings ``[..., C]``."""
        return {STATE: torch.as_tensor(obs[..., self.state_dims], dtype=torch.float32),
                ENV: torch.as_tensor(np.concatenate([obs[..., self.env_dims], cond], -1), dtype=torch.float32)}

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.policy.parameters())

    # ------------------------------------------------------------------ acting
    def reset(self, rows: int) -> None:
        """Begin ``rows`` new episodes: no history, no chunk; the noise generator restarts from the seed."""
        s = self.settings
        self._history = np.zeros((rows, s.n_obs_steps, self.obs_dim), np.float32)
        self._cond = np.zeros((rows, self.cond_dim), np.float32)
        self._chunk = np.zeros((rows, s.n_action_steps, self.action_dim), np.float32)
        self._left = np.zeros(rows, dtype=np.int64)
        self._started = np.zeros(rows, dtype=bool)
        self._generator = torch.Generator().manual_seed(self.seed)

    @torch.no_grad()
    def act(self, obs: np.ndarray, instruction_embedding: np.ndarray, *, deterministic: bool = True,
            rows: Any = None) -> np.ndarray:
        """The next action of each row's chunk (``rows``: which episodes these are; default all — without an
        earlier ``reset`` for them, a call begins that many episodes). ``deterministic`` has no effect: the
        denoising noise comes from the policy's own seeded generator either way."""
        obs = np.asarray(obs, np.float32)
        rows = np.arange(len(obs)) if rows is None else np.asarray(rows, dtype=np.int64)
        if len(rows) and int(rows.max()) >= len(self._left):
            self.reset(int(rows.max()) + 1)
        fresh = ~self._started[rows]
        self._history[rows] = np.roll(self._history[rows], -1, axis=1)
        self._history[rows, -1] = obs
        self._history[rows[fresh]] = obs[fresh, None]  # lerobot fills the first window with the first observation
        self._cond[rows] = instruction_embedding
        self._started[rows] = True
        need = rows[self._left[rows] == 0]
        if len(need):
            self._chunk[need] = self._plan(self._history[need], self._cond[need])
            self._left[need] = self.settings.n_action_steps
        actions = self._chunk[rows, self.settings.n_action_steps - self._left[rows]]
        self._left[rows] -= 1
        return np.clip(actions, -1.0, 1.0).astype(np.float32)

    def _plan(self, history: np.ndarray, cond: np.ndarray) -> np.ndarray:
        """``n_action_steps`` actions ``[B, n, A]`` from the observation windows ``[B, n_obs, O]``."""
        self.policy.eval()
        batch = self.preprocessor(self.features(history, np.repeat(cond[:, None], history.shape[1], 1)))
        noise = torch.randn((len(history), self.settings.horizon, self.action_dim), generator=self._generator)
        chunk = self.policy.diffusion.generate_actions({STATE: batch[STATE], ENV: batch[ENV]}, noise=noise)
        return self.postprocessor(chunk).numpy()

    # ------------------------------------------------------------------ the checkpoint
    def spec(self) -> dict[str, Any]:
        return {"kind": self.kind, "settings": dataclasses.asdict(self.settings), "state_dims": self.state_dims,
                "env_dims": self.env_dims, "obs_dim": self.obs_dim, "cond_dim": self.cond_dim,
                "action_dim": self.action_dim, "parameters": self.parameter_count(), "seed": self.seed,
                "info": self.info}

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(path / LEROBOT, ignore_errors=True)
        self.policy.save_pretrained(path / LEROBOT)
        self.preprocessor.save_pretrained(path / LEROBOT)
        self.postprocessor.save_pretrained(path / LEROBOT)
        spec = json.loads(json.dumps(self.spec()))
        spec["content_sha256"] = _digest(path / LEROBOT, spec)
        tmp = path / f".{SPEC}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(spec, indent=1, sort_keys=True))
        tmp.replace(path / SPEC)

    @classmethod
    def load(cls, path: str | Path) -> DiffusionPolicy:
        from dreamgen.checkpoints import loading

        path = Path(path)
        try:
            spec = json.loads((path / SPEC).read_text())
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{path / SPEC}: not a readable policy spec ({exc}); {MAKE}") from exc
        if spec.get("kind") != KIND:
            raise CheckpointError(f"{path}: a {spec.get('kind')!r} policy checkpoint, not a {KIND} one; {MAKE}")
        if not (path / LEROBOT).is_dir():
            raise CheckpointError(f"{path}: no {LEROBOT}/ folder (lerobot's save_pretrained); {MAKE}")
        if spec.get("content_sha256") != _digest(path / LEROBOT, spec):
            raise CheckpointError(f"{path}: {SPEC} or a file under {LEROBOT}/ changed after the policy was written "
                                  f"(its content_sha256 does not match); {MAKE}")
        with loading(path, "policy", MAKE):
            from lerobot.policies.diffusion.modeling_diffusion import DiffusionPolicy as LeRobotDiffusion
            from lerobot.processor import PolicyProcessorPipeline
            from lerobot.processor.converters import policy_action_to_transition, transition_to_policy_action

            policy = LeRobotDiffusion.from_pretrained(path / LEROBOT, local_files_only=True)
            pre = PolicyProcessorPipeline.from_pretrained(path / LEROBOT, "policy_preprocessor.json",
                                                          local_files_only=True)
            post = PolicyProcessorPipeline.from_pretrained(path / LEROBOT, "policy_postprocessor.json",
                                                           local_files_only=True, to_transition=policy_action_to_transition,
                                                           to_output=transition_to_policy_action)
            return cls(policy, pre, post, DiffusionSettings.from_config(spec["settings"]), spec["state_dims"],
                       spec["env_dims"], spec["obs_dim"], spec["cond_dim"], spec["action_dim"], spec["info"],
                       int(spec.get("seed", 0)))


def _digest(folder: Path, spec: dict[str, Any]) -> str:
    """sha256 over every file under ``folder`` (names and bytes, in name order) and the spec without its digest."""
    h = hashlib.sha256()
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(file.relative_to(folder).as_posix().encode() + b"\0" + file.read_bytes())
    body = {k: v for k, v in spec.items() if k != "content_sha256"}
    h.update(json.dumps(body, sort_keys=True).encode())
    return h.hexdigest()


def fit_diffusion(obs: np.ndarray, action: np.ndarray, cond: np.ndarray, lengths: Any,
                  settings: DiffusionSettings, *, robot: Any, batch_size: int, weight_decay: float, seed: int,
                  info: dict[str, Any] | None = None, on_epoch: Callable[[int, float], None] | None = None,
                  dream: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
                  dream_lengths: Any = None, max_dream_fraction: float = 0.0) -> DiffusionPolicy:
    """Train lerobot's Diffusion Policy on real episodes (frames end to end, ``lengths``) + capped dreams.

    Statistics for lerobot's normaliser come from the real frames only (as BC's normaliser). Every batch is
    ``CappedMixSampler``'s (``fit_on_mix``): the frames it draws are the windows' current observations.
    """
    from lerobot.policies.diffusion.modeling_diffusion import DiffusionPolicy as LeRobotDiffusion
    from lerobot.policies.diffusion.processor_diffusion import make_diffusion_pre_post_processors

    from policies.bc import BCConfig, fit_on_mix

    settings.check()
    if len(obs) == 0:
        raise ValueError("fit_diffusion: no training frames")
    state_dims, env_dims = state_split(robot, settings.state_part, obs.shape[1])
    torch.manual_seed(seed)
    pools = [(obs, action, cond, lengths)]
    if dream is not None and len(dream[0]):
        assert dream_lengths is not None
        pools.append((dream[0], dream[1], dream[2], dream_lengths))
    n_real = len(obs)
    shell = DiffusionPolicy(None, None, None, settings, state_dims, env_dims, obs.shape[1], cond.shape[1],
                            action.shape[1], info, seed)
    real = shell.features(obs, cond)
    stats = _stats({STATE: real[STATE].numpy(), ENV: real[ENV].numpy(), ACTION: action.astype(np.float32)})
    config = _lerobot_config(settings, len(state_dims), len(env_dims) + cond.shape[1], action.shape[1])
    policy = LeRobotDiffusion(config)
    pre, post = make_diffusion_pre_post_processors(config, dataset_stats=stats)
    shell.policy, shell.preprocessor, shell.postprocessor = policy, pre, post
    # every frame normalised once by lerobot's preprocessor, then windows gathered per batch
    frames = [pre({**shell.features(o, c), ACTION: torch.as_tensor(a, dtype=torch.float32)}) for o, a, c, _ in pools]
    state, env, act = (torch.cat([f[key] for f in frames]) for key in (STATE, ENV, ACTION))
    obs_index, act_index, pad = [], [], []
    offset = 0
    for o, _, _, n in pools:
        w = windows(n, settings.n_obs_steps, settings.horizon)
        obs_index.append(w[0] + offset)
        act_index.append(w[1] + offset)
        pad.append(w[2])
        offset += len(o)
    oi, ai = torch.as_tensor(np.concatenate(obs_index)), torch.as_tensor(np.concatenate(act_index))
    is_pad = torch.as_tensor(np.concatenate(pad))

    def loss(index: torch.Tensor) -> torch.Tensor:
        batch = {STATE: state[oi[index]], ENV: env[oi[index]], ACTION: act[ai[index]], "action_is_pad": is_pad[index]}
        return policy.forward(batch)[0]

    budget = BCConfig(hidden=0, layers=0, lr=settings.lr, weight_decay=weight_decay, epochs=settings.epochs,
                      batch_size=batch_size, action_noise_std=0.0)
    policy.train()
    achieved = fit_on_mix(loss, policy.parameters(), n_real, offset - n_real, budget, seed=seed,
                          max_dream_fraction=max_dream_fraction, on_epoch=on_epoch)
    policy.eval()
    shell.info["achieved_dream_fraction"] = achieved
    shell.info["parameters"] = shell.parameter_count()
    return shell


__all__ = ["DiffusionPolicy", "DiffusionSettings", "fit_diffusion", "state_split", "windows"]
