"""Language-conditioned behaviour cloning: an MLP on (normalised state, instruction embedding).

``fit_bc(obs[N,O], action[N,A], cond[N,C], ...) -> BCPolicy``; checkpoints are ``model.safetensors``
plus ``policy.json`` (architecture, normaliser, training provenance) — never a pickle.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dreamgen.nets import mlp_blocks

log = logging.getLogger(__name__)
MAKE = "train one with `dreamgen train-policy`"


@dataclasses.dataclass(frozen=True)
class BCConfig:
    hidden: int  # width of each hidden layer
    layers: int  # number of hidden layers
    lr: float  # Adam learning rate
    weight_decay: float  # AdamW weight decay
    epochs: int  # passes over the training frames
    batch_size: int  # frames per gradient step
    action_noise_std: float  # std of Gaussian noise when acting with deterministic=False


class _MLP(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, hidden: int, layers: int):
        super().__init__()
        self.net = nn.Sequential(*mlp_blocks(in_dim, hidden, layers, nn.GELU),
                                 nn.Linear(hidden if layers else in_dim, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(x))


class BCPolicy:
    """A trained BC policy; implements ``policies.base.Policy``."""

    kind = "bc"

    def __init__(self, config: BCConfig, obs_mean: np.ndarray, obs_std: np.ndarray, cond_dim: int,
                 action_dim: int, info: dict[str, Any] | None = None, seed: int = 0):
        self.config = config
        self.obs_mean = obs_mean.astype(np.float32)
        self.obs_std = obs_std.astype(np.float32)
        self.cond_dim, self.action_dim = cond_dim, action_dim
        self.info = dict(info or {})
        self.model = _MLP(len(obs_mean) + cond_dim, action_dim, config.hidden, config.layers)
        self._rng = np.random.default_rng(seed)

    def _inputs(self, obs: np.ndarray, cond: np.ndarray) -> torch.Tensor:
        x = np.concatenate([(obs - self.obs_mean) / self.obs_std, cond], axis=-1)
        return torch.as_tensor(x, dtype=torch.float32)

    @torch.no_grad()
    def act(self, obs: np.ndarray, instruction_embedding: np.ndarray, *,
            deterministic: bool = True) -> np.ndarray:
        self.model.eval()
        action = self.model(self._inputs(obs, instruction_embedding)).numpy()
        if not deterministic:
            action = action + self._rng.normal(0.0, self.config.action_noise_std, action.shape)
        return np.clip(action, -1.0, 1.0).astype(np.float32)

    def save(self, path: str | Path) -> None:
        from dreamgen.checkpoints import write_checkpoint

        write_checkpoint(path, self.model.state_dict(), {
            "kind": self.kind, "config": dataclasses.asdict(self.config),
            "obs_mean": self.obs_mean.tolist(), "obs_std": self.obs_std.tolist(),
            "cond_dim": self.cond_dim, "action_dim": self.action_dim, "info": self.info,
        }, "policy.json")

    @classmethod
    def load(cls, path: str | Path) -> BCPolicy:
        from dreamgen.checkpoints import loading, read_checkpoint

        spec, tensors = read_checkpoint(path, "policy.json", "policy", MAKE)
        with loading(path, "policy", MAKE):
            policy = cls(BCConfig(**spec["config"]), np.asarray(spec["obs_mean"]), np.asarray(spec["obs_std"]),
                         spec["cond_dim"], spec["action_dim"], spec["info"])
            policy.model.load_state_dict(tensors)
        return policy


def fit_on_mix(loss_of: Callable[[torch.Tensor], torch.Tensor], parameters: Any, n_real: int, n_dream: int,
               config: BCConfig, *, seed: int, max_dream_fraction: float = 0.0,
               on_epoch: Callable[[int, float], None] | None = None) -> float:
    """Minimise ``loss_of(index)`` (the mean loss of frames ``index``) on capped real + dream batches; returns
    the achieved dream fraction.

    Frames ``[0, n_real)`` are real, the next ``n_dream`` dreams. ``CappedMixSampler`` builds every batch
    (at most ``floor(max_dream_fraction x batch_size)`` dream rows). The budget is fixed in gradient steps,
    ``epochs x ceil(n_real / batch_size)``, whatever the cap, so arms of a ratio sweep differ in what they
    train on, not in how long; ``on_epoch(epoch, mean loss)`` is called every ``ceil(n_real / batch_size)`` steps.
    """
    from dreamgen.mix import CappedMixSampler

    sampler = CappedMixSampler(n_real, n_dream, config.batch_size, max_dream_fraction, seed=seed)
    optimiser = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = max(1, int(np.ceil(n_real / config.batch_size)))
    total_steps = config.epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=total_steps)
    step, total, seen = 0, 0.0, 0
    while step < total_steps:
        for real, dreamed in sampler.epoch():
            index = torch.as_tensor(np.concatenate([real, dreamed + n_real]))
            loss = loss_of(index)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            scheduler.step()
            total, seen, step = total + loss.item() * len(index), seen + len(index), step + 1
            if step % steps_per_epoch == 0:
                if on_epoch is not None:
                    on_epoch(step // steps_per_epoch - 1, total / seen)
                total, seen = 0.0, 0
            if step == total_steps:
                break
    return sampler.achieved_fraction


def fit_bc(obs: np.ndarray, action: np.ndarray, cond: np.ndarray, config: BCConfig, *, seed: int,
           info: dict[str, Any] | None = None,
           on_epoch: Callable[[int, float], None] | None = None,
           dream: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
           max_dream_fraction: float = 0.0) -> BCPolicy:
    """Fit a BC policy by MSE on ``(obs[N,O], cond[N,C]) -> action[N,A]``; deterministic given ``seed``.

    ``dream = (obs, action, cond)`` of accepted dream frames is mixed in at most ``max_dream_fraction`` of
    every batch (``fit_on_mix``). The normaliser is fitted on real frames only. The achieved dream
    fraction is written to ``policy.info["achieved_dream_fraction"]``.
    """
    if len(obs) == 0:
        raise ValueError("fit_bc: no training frames")
    torch.manual_seed(seed)
    mean, std = obs.mean(axis=0), obs.std(axis=0)
    std = np.maximum(std, 1e-2)  # constant dims (e.g. an unused object slot) stay finite
    policy = BCPolicy(config, mean, std, cond.shape[1], action.shape[1], info, seed=seed)
    pools = [(obs, action, cond)] + ([dream] if dream is not None and len(dream[0]) else [])
    x = torch.cat([policy._inputs(o, c) for o, _, c in pools])
    y = torch.as_tensor(np.concatenate([a for _, a, _ in pools]), dtype=torch.float32)
    policy.model.train()
    achieved = fit_on_mix(lambda index: nn.functional.mse_loss(policy.model(x[index]), y[index]),
                          policy.model.parameters(), len(obs), len(y) - len(obs), config, seed=seed,
                          max_dream_fraction=max_dream_fraction, on_epoch=on_epoch)
    policy.model.eval()
    policy.info["achieved_dream_fraction"] = achieved
    return policy


# ---------------------------------------------------------------------- from the camera
class _ImageMLP(nn.Module):
    """Camera frames ``[B, C, H, W, 3]`` uint8 + low-dim inputs ``[B, L]`` -> action ``[B, A]`` in [-1, 1]:
    four stride-2 convolutions, then the MLP of ``_MLP`` on [image features, low-dim inputs]."""

    def __init__(self, views: int, height: int, width: int, low_dim: int, out_dim: int, hidden: int, layers: int,
                 channels: int = 16):
        super().__init__()
        c = channels
        convs: list[nn.Module] = []
        for i, o in ((3 * views, c), (c, 2 * c), (2 * c, 4 * c), (4 * c, 4 * c)):
            convs += [nn.Conv2d(i, o, 4, 2, 1), nn.GELU()]
        self.conv = nn.Sequential(*convs, nn.Flatten(), nn.Linear(4 * c * (height // 16) * (width // 16), hidden),
                                  nn.LayerNorm(hidden), nn.Tanh())
        self.head = _MLP(hidden + low_dim, out_dim, hidden, layers)

    def forward(self, images: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
        from dreamgen.world_model.latent import ImageAutoencoder

        return self.head(torch.cat([self.conv(ImageAutoencoder.pixels(images)), low], -1))


def random_shift(images: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """DrQ's augmentation: every frame ``[B, C, H, W, 3]`` padded by ``pad`` (edge pixels) and cropped back at
    a random offset, per sample."""
    b, c, h, w, _ = images.shape
    padded = nn.functional.pad(images.permute(0, 1, 4, 2, 3).reshape(b, 3 * c, h, w).float(),
                               (pad, pad, pad, pad), mode="replicate")
    dx, dy = (torch.randint(0, 2 * pad + 1, (b,), generator=generator) for _ in range(2))
    rows = (dy[:, None] + torch.arange(h)[None])[:, None, :, None].expand(b, 3 * c, h, w + 2 * pad)
    shifted = padded.gather(2, rows)
    cols = (dx[:, None] + torch.arange(w)[None])[:, None, None, :].expand(b, 3 * c, h, w)
    shifted = shifted.gather(3, cols)
    return shifted.round().to(torch.uint8).reshape(b, c, 3, h, w).permute(0, 1, 3, 4, 2)


class ImageBCPolicy:
    """BC from the camera: frames + the robot's proprioception and goal (``obs_dims`` of the state) +
    instruction -> action. ``act`` needs ``images[B, C, H, W, 3]`` (the real simulator's renders)."""

    kind = "bc-image"

    def __init__(self, config: BCConfig, cameras: Any, obs_dims: list[int], obs_mean: np.ndarray, obs_std: np.ndarray,
                 cond_dim: int, action_dim: int, info: dict[str, Any] | None = None, seed: int = 0):
        self.config, self.cameras, self.obs_dims = config, cameras, list(obs_dims)
        self.obs_mean, self.obs_std = obs_mean.astype(np.float32), obs_std.astype(np.float32)
        self.cond_dim, self.action_dim = cond_dim, action_dim
        self.info = dict(info or {})
        views, height, width, _ = cameras.shape
        self.model = _ImageMLP(views, height, width, len(obs_dims) + cond_dim, action_dim, config.hidden, config.layers)
        self._rng = np.random.default_rng(seed)

    def _low(self, obs: np.ndarray, cond: np.ndarray) -> torch.Tensor:
        x = np.concatenate([(obs[:, self.obs_dims] - self.obs_mean) / self.obs_std, cond], axis=-1)
        return torch.as_tensor(x, dtype=torch.float32)

    @torch.no_grad()
    def act(self, obs: np.ndarray, instruction_embedding: np.ndarray, *, images: np.ndarray | None = None,
            deterministic: bool = True) -> np.ndarray:
        if images is None:
            raise ValueError(f"an image policy acts on camera frames ({self.cameras.describe()}); pass images")
        self.model.eval()
        action = self.model(torch.as_tensor(np.asarray(images)), self._low(obs, instruction_embedding)).numpy()
        if not deterministic:
            action = action + self._rng.normal(0.0, self.config.action_noise_std, action.shape)
        return np.clip(action, -1.0, 1.0).astype(np.float32)

    def save(self, path: str | Path) -> None:
        from dreamgen.checkpoints import write_checkpoint

        write_checkpoint(path, self.model.state_dict(), {
            "kind": self.kind, "config": dataclasses.asdict(self.config), "cameras": self.cameras.to_json(),
            "obs_dims": self.obs_dims, "obs_mean": self.obs_mean.tolist(), "obs_std": self.obs_std.tolist(),
            "cond_dim": self.cond_dim, "action_dim": self.action_dim, "info": self.info,
        }, "policy.json")

    @classmethod
    def load(cls, path: str | Path) -> ImageBCPolicy:
        from dreamgen.checkpoints import loading, read_checkpoint
        from dreamgen.spaces import Cameras

        spec, tensors = read_checkpoint(path, "policy.json", "policy", MAKE)
        with loading(path, "policy", MAKE):
            policy = cls(BCConfig(**spec["config"]), Cameras.from_json(spec["cameras"]), spec["obs_dims"],
                         np.asarray(spec["obs_mean"]), np.asarray(spec["obs_std"]), spec["cond_dim"],
                         spec["action_dim"], spec["info"])
            policy.model.load_state_dict(tensors)
        return policy


def fit_image_bc(obs: np.ndarray, images: np.ndarray, action: np.ndarray, cond: np.ndarray, config: BCConfig, *,
                 cameras: Any, obs_dims: list[int], seed: int, info: dict[str, Any] | None = None,
                 on_epoch: Callable[[int, float], None] | None = None,
                 dream: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None,
                 max_dream_fraction: float = 0.0) -> ImageBCPolicy:
    """``fit_bc`` from the camera: ``(images[N,C,H,W,3], obs[N, obs_dims], cond) -> action`` on the same capped
    mix (``dream = (obs, images, action, cond)``), with random-shift augmentation of the frames."""
    if len(obs) == 0:
        raise ValueError("fit_image_bc: no training frames")
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    low_obs = obs[:, obs_dims]
    policy = ImageBCPolicy(config, cameras, obs_dims, low_obs.mean(0), np.maximum(low_obs.std(0), 1e-2),
                           cond.shape[1], action.shape[1], info, seed=seed)
    pools = [(obs, images, action, cond)] + ([dream] if dream is not None and len(dream[0]) else [])
    low = torch.cat([policy._low(o, c) for o, _, _, c in pools])
    frames = torch.as_tensor(np.concatenate([i for _, i, _, _ in pools]))
    y = torch.as_tensor(np.concatenate([a for _, _, a, _ in pools]), dtype=torch.float32)
    policy.model.train()
    pad = max(1, cameras.height // 16)
    achieved = fit_on_mix(lambda index: nn.functional.mse_loss(
                              policy.model(random_shift(frames[index], pad, generator), low[index]), y[index]),
                          policy.model.parameters(), len(obs), len(y) - len(obs), config, seed=seed,
                          max_dream_fraction=max_dream_fraction, on_epoch=on_epoch)
    policy.model.eval()
    policy.info["achieved_dream_fraction"] = achieved
    return policy
