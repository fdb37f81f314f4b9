"""A latent world model for cameras: encode the images, predict in latent space, decode.

- ``ImageAutoencoder``: a convolutional encoder of every camera's frame (plus the robot's proprioception,
  the embodiment's ``hand`` part) to learned features, which with the proprioception itself make the latent
  ``z[Z + P]``; a transposed-convolution decoder back to images, and a state head that reads the dynamic
  state dims (hand, gripper, objects) from ``z``.
- The latent dynamics are the ensemble of ``dreamgen.world_model.ensemble`` (same code, same training,
  same disagreement, same halting bound) run on the latent observation ``[z_t, z_{t-1}, static dims]``
  (the goal is carried as the state model carries it), with its reward / success / done heads on the latent.

Training is in two stages (``fit_latent``), as in World Models (Ha & Schmidhuber 2018): the autoencoder
on real frames (image reconstruction + state), then the ensemble on the encoded episodes.

``LatentWorldModel`` keeps the ``WorldModel`` rollout contract: ``initial_state(obs, embeddings,
images=...)`` encodes the start frames, ``step`` predicts the next latent and reads the next robot state
from it, so every sampler, the planner, the filter and the audit see a robot state as from the state
model; ``render(state)`` decodes the rows' images (the dream's pixels).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from dreamgen.spaces import Cameras
from dreamgen.types import Episode
from dreamgen.world_model.base import InstructionTable, ObsLayout, OwnsRows, Prediction, RowState
from dreamgen.world_model.ensemble import EnsembleConfig, EnsembleWorldModel, Normaliser

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class LatentConfig:
    """The autoencoder's size and training (defaults live in ``configs/config.yaml``, ``world_model.latent``)."""

    dim: int = 32  # learned latent features Z (the proprioception P is appended: the latent is Z + P wide)
    channels: int = 16  # first conv layer's channels (doubled twice)
    epochs: int = 40  # autoencoder passes over the training frames
    batch_size: int = 64
    lr: float = 1e-3
    image_weight: float = 100.0  # weight of the per-pixel image MSE (pixels in [-0.5, 0.5]: ~1e-3 once fitted)
    state_weight: float = 1.0  # weight of the state head's loss (normalised dims: ~0.3 once fitted)

    def __post_init__(self) -> None:
        for name in ("dim", "channels", "epochs", "batch_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"world_model.latent.{name}={getattr(self, name)!r}; must be an integer >= 1")
        if self.lr <= 0 or self.state_weight < 0 or self.image_weight <= 0:
            raise ValueError(f"world_model.latent.lr={self.lr} and image_weight={self.image_weight} must be > 0 and "
                             f"state_weight={self.state_weight} >= 0")


class ImageAutoencoder(nn.Module):
    """Frames ``[B, C, H, W, 3]`` uint8 + proprioception ``[B, P]`` -> ``z[B, Z]`` -> frames and state."""

    def __init__(self, cameras: Cameras, proprio_dim: int, n_state: int, config: LatentConfig):
        super().__init__()
        c, views = config.channels, len(cameras.names)
        h, w = cameras.height // 16, cameras.width // 16
        feat = 4 * c * h * w
        act = nn.SiLU

        def down(i: int, o: int) -> list[nn.Module]:
            return [nn.Conv2d(i, o, 4, 2, 1), act()]

        def up(i: int, o: int) -> list[nn.Module]:
            return [nn.ConvTranspose2d(i, o, 4, 2, 1), act()]

        self.conv = nn.Sequential(*down(3 * views, c), *down(c, 2 * c), *down(2 * c, 4 * c), *down(4 * c, 4 * c),
                                  nn.Flatten())
        self.size = config.dim + proprio_dim  # the latent: learned image features, then the proprioception itself
        self.to_latent = nn.Sequential(nn.Linear(feat + proprio_dim, 256), act(), nn.Linear(256, config.dim))
        self.from_latent = nn.Sequential(nn.Linear(self.size, 256), act(), nn.Linear(256, feat), act(),
                                         nn.Unflatten(1, (4 * c, h, w)))
        self.deconv = nn.Sequential(*up(4 * c, 4 * c), *up(4 * c, 2 * c), *up(2 * c, c),
                                    nn.ConvTranspose2d(c, 3 * views, 4, 2, 1))
        self.state_head = nn.Sequential(nn.Linear(self.size, 256), act(), nn.Linear(256, n_state))
        self.views = views

    @staticmethod
    def pixels(images: torch.Tensor) -> torch.Tensor:
        """uint8 ``[B, C, H, W, 3]`` -> float ``[B, 3C, H, W]`` in [-0.5, 0.5]."""
        b, c, h, w, _ = images.shape
        return images.permute(0, 1, 4, 2, 3).reshape(b, 3 * c, h, w).float() / 255.0 - 0.5

    def to_frames(self, pixels: torch.Tensor) -> torch.Tensor:
        """float ``[B, 3C, H, W]`` -> uint8 ``[B, C, H, W, 3]``."""
        b, _, h, w = pixels.shape
        x = ((pixels + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)
        return x.reshape(b, self.views, 3, h, w).permute(0, 1, 3, 4, 2)

    def encode(self, pixels: torch.Tensor, proprio: torch.Tensor) -> torch.Tensor:
        """``z = [features of the frames and proprioception, the (normalised) proprioception]``: what the robot
        knows of itself passes into the latent exactly; the rest (objects) comes from the frames."""
        return torch.cat([self.to_latent(torch.cat([self.conv(pixels), proprio], -1)), proprio], -1)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """``z[B, Z]`` -> float pixels ``[B, 3C, H, W]`` (the scale of ``pixels``)."""
        return self.deconv(self.from_latent(z))


def latent_layout(robot: ObsLayout, dim: int) -> ObsLayout:
    """``[z_t (predicted), z_{t-1} (history), the robot's static dims (carried)]``."""
    static = None if robot.static is None else (2 * dim, 2 * dim + robot.static[1] - robot.static[0])
    return ObsLayout(f"latent-{dim}+{robot.name}", 2 * dim + (0 if static is None else static[1] - static[0]),
                     dynamic=(0, dim), history=(dim, 2 * dim), static=static)


class LatentWorldModel(OwnsRows):
    """Encoder + latent ensemble + decoder behind the ``WorldModel`` contract (see the module docstring)."""

    kind = "latent"

    def __init__(self, autoencoder: ImageAutoencoder, dynamics: EnsembleWorldModel, layout: ObsLayout,
                 cameras: Cameras, config: LatentConfig, proprio: tuple[int, int] | None, state_norm: Normaliser,
                 info: dict[str, Any] | None = None, device: str = "cpu"):
        self.autoencoder, self.dynamics, self.layout, self.cameras = autoencoder, dynamics, layout, cameras
        self.config, self.proprio, self.info = config, proprio, dict(info or {})
        self.device = torch.device(device)
        self.autoencoder.to(self.device).eval()
        self.state_norm = Normaliser(*(t.to(self.device) for t in state_norm))
        self.action_dim, self.cond_dim = dynamics.action_dim, dynamics.cond_dim
        self.context_dim = dynamics.context_dim

    # the ensemble's table, bound and members are the model's
    @property
    def instructions(self) -> InstructionTable:
        return self.dynamics.instructions

    @instructions.setter
    def instructions(self, table: InstructionTable) -> None:
        self.dynamics.instructions = table

    @property
    def members(self) -> int:  # type: ignore[override]  # the ensemble's, read through
        return self.dynamics.members

    @property
    def heads(self) -> tuple[str, ...]:  # type: ignore[override]  # the latent ensemble's
        return tuple(self.dynamics.heads)

    @property
    def disagreement_bound(self) -> float:
        return self.dynamics.disagreement_bound

    # ------------------------------------------------------------------ encoding
    def _proprio(self, obs: torch.Tensor) -> torch.Tensor:
        if self.proprio is None:
            return obs[:, :0]
        part = slice(*self.proprio)
        return (obs[:, part] - self.state_norm.mean[part]) / self.state_norm.std[part]

    @torch.no_grad()
    def encode(self, images: Any, obs: Any) -> torch.Tensor:
        """``z[B, Z]`` of frames ``images[B, C, H, W, 3]`` (uint8) seen at robot states ``obs[B, O]``."""
        images = torch.as_tensor(np.asarray(images), device=self.device)
        if tuple(images.shape[1:]) != self.cameras.shape or images.dtype != torch.uint8:
            raise ValueError(f"images of shape {tuple(images.shape)} {images.dtype}; this latent model sees uint8 "
                             f"[B, {', '.join(map(str, self.cameras.shape))}] (cameras {self.cameras.describe()})")
        obs = torch.as_tensor(obs, dtype=torch.float32, device=self.device)
        out = [self.autoencoder.encode(self.autoencoder.pixels(images[i:i + 512]), self._proprio(obs[i:i + 512]))
               for i in range(0, len(images), 512)]
        return torch.cat(out) if out else torch.zeros(0, self.autoencoder.size, device=self.device)

    def observe(self, obs: np.ndarray, images: np.ndarray | None) -> np.ndarray:
        """The latent observations ``[T, 2Z+S]`` of one episode's frames (what the dynamics step on)."""
        if images is None:
            raise ValueError("a latent world model needs the episode's images (an image store)")
        z = self.encode(images, obs).cpu().numpy()
        previous = np.concatenate([z[:1], z[:-1]])  # at the first frame the robot is at rest
        static = obs[:, slice(*self.layout.static)] if self.layout.static else obs[:, :0]
        return np.concatenate([z, previous, static], 1).astype(np.float32)

    @torch.no_grad()
    def read_state(self, z: torch.Tensor) -> torch.Tensor:
        """The dynamic robot state dims ``[B, D]`` the state head reads from ``z[B, Z]``."""
        dyn = slice(*self.layout.dynamic)
        return self.autoencoder.state_head(z) * self.state_norm.std[dyn] + self.state_norm.mean[dyn]

    # ------------------------------------------------------------------ the rollout contract
    def condition(self, cond: torch.Tensor) -> Any:
        return self.dynamics.condition(cond)

    def initial_state(self, obs: torch.Tensor, embeddings: torch.Tensor, *, generator: torch.Generator | None = None,
                      images: Any = None) -> RowState:
        """Rows at rest at the real ``obs[B, O]`` seen as ``images[B, C, H, W, 3]``."""
        obs = torch.as_tensor(obs, dtype=torch.float32, device=self.device)
        if images is None:
            raise ValueError("a latent world model starts from camera images; give images[B, C, H, W, 3] (the "
                             "start store must be an image store)")
        z = self.encode(images, obs)
        static = obs[:, slice(*self.layout.static)] if self.layout.static else obs[:, :0]
        inner = self.dynamics.initial_state(torch.cat([z, z, static], 1), embeddings, generator=generator)
        return RowState(obs.clone(), inner.cond, inner.member, inner.context, latent=inner.obs)

    @torch.no_grad()
    def step(self, state: RowState, action: torch.Tensor, *, generator: torch.Generator | None = None,
             propagation: str = "random") -> tuple[RowState, Prediction]:
        """The next latent from the ensemble; the next robot state read from it (static dims carried)."""
        assert state.latent is not None, "a latent model's rows carry their latent"
        inner, pred = self.dynamics.step(RowState(state.latent, state.cond, state.member, state.context), action,
                                         generator=generator, propagation=propagation)
        delta = self.read_state(inner.obs[:, :self.autoencoder.size]) - state.obs[:, slice(*self.layout.dynamic)]
        obs = self.layout.compose(state.obs, delta)
        return RowState(obs, inner.cond, inner.member, inner.context, latent=inner.obs), pred._replace(next_obs=obs)

    def blank(self, rows: int, *, generator: torch.Generator | None = None) -> RowState:
        dev = self.device
        return self.initial_state(torch.zeros(rows, self.layout.obs_dim, device=dev),
                                  torch.zeros(rows, self.cond_dim, device=dev), generator=generator,
                                  images=np.zeros((rows, *self.cameras.shape), np.uint8))

    def episode_prediction(self, obs: np.ndarray, images: np.ndarray | None, action: np.ndarray,
                           cond: np.ndarray) -> Any:
        """The latent ensemble's prediction on the latents of the episode's frames."""
        return self.dynamics.episode_prediction(self.observe(obs, images), None, action, cond)

    @torch.no_grad()
    def render(self, state: RowState) -> np.ndarray:
        """The rows' decoded camera frames ``uint8 [B, C, H, W, 3]``."""
        assert state.latent is not None
        z = state.latent[:, :self.autoencoder.size]
        out = [self.autoencoder.to_frames(self.autoencoder.decode(z[i:i + 512])) for i in range(0, len(z), 512)]
        return torch.cat(out).cpu().numpy() if out else np.zeros((0, *self.cameras.shape), np.uint8)


# ---------------------------------------------------------------------- training
def _frames(episodes: Sequence[Episode]) -> tuple[np.ndarray, np.ndarray]:
    return np.concatenate([e.images for e in episodes]), np.concatenate([e.obs for e in episodes])  # type: ignore[misc]


def fit_autoencoder(model: LatentWorldModel, train: Sequence[Episode], val: Sequence[Episode], *, seed: int,
                    on_epoch: Callable[[int, dict[str, float]], None] | None = None) -> dict[str, float]:
    """Train ``model.autoencoder`` on real frames: ``image_weight`` x MSE of the decoded images +
    ``state_weight`` x MSE of the normalised dynamic state; keep the best epoch on ``val``. Returns the best
    val losses. (Unweighted, the state term is ~100x the image term and the decoder stays blurry: two
    trainings that differed only in thread scheduling reached image MSE 0.0014 and 0.0066.)"""
    torch.manual_seed(seed)
    ae, config, dyn = model.autoencoder, model.config, slice(*model.layout.dynamic)
    generator = torch.Generator().manual_seed(seed)
    images, obs = (torch.as_tensor(x) for x in _frames(train))
    val_images, val_obs = (torch.as_tensor(x) for x in _frames(val))
    norm = model.state_norm

    def losses(img: torch.Tensor, o: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pixels = ae.pixels(img)
        z = ae.encode(pixels, model._proprio(o))
        image_loss = nn.functional.mse_loss(ae.decode(z), pixels)
        state_loss = nn.functional.mse_loss(ae.state_head(z), (o[:, dyn] - norm.mean[dyn]) / norm.std[dyn])
        return image_loss, state_loss + 1e-4 * z.pow(2).mean()

    optimiser = torch.optim.AdamW(ae.parameters(), lr=config.lr, weight_decay=1e-5)
    best: dict[str, float] = {"image": float("inf"), "state": float("inf")}
    snapshot = {k: v.detach().clone() for k, v in ae.state_dict().items()}
    for epoch in range(config.epochs):
        ae.train()
        order = torch.randperm(len(images), generator=generator)
        for start in range(0, len(order), config.batch_size):
            index = order[start:start + config.batch_size]
            image_loss, state_loss = losses(images[index], obs[index])
            optimiser.zero_grad(set_to_none=True)
            (config.image_weight * image_loss + config.state_weight * state_loss).backward()
            optimiser.step()
        ae.eval()
        with torch.no_grad():
            parts = [losses(val_images[i:i + 256], val_obs[i:i + 256]) for i in range(0, len(val_images), 256)]
            weights = [min(256, len(val_images) - i) for i in range(0, len(val_images), 256)]
            image_val = float(sum(p[0] * w for p, w in zip(parts, weights, strict=True)) / sum(weights))
            state_val = float(sum(p[1] * w for p, w in zip(parts, weights, strict=True)) / sum(weights))
        if config.image_weight * image_val + config.state_weight * state_val < \
                config.image_weight * best["image"] + config.state_weight * best["state"]:
            best = {"image": image_val, "state": state_val}
            snapshot = {k: v.detach().clone() for k, v in ae.state_dict().items()}
        if on_epoch is not None:
            on_epoch(epoch, {"wm/ae_val_image_mse": image_val, "wm/ae_val_state_mse": state_val})
    ae.load_state_dict(snapshot)
    ae.eval()
    return best


def encoded(model: LatentWorldModel, episodes: Sequence[Episode]) -> list[Episode]:
    """The episodes with latent observations (``observe``) in place of the robot state, images dropped."""
    return [dataclasses.replace(e, obs=model.observe(e.obs, e.images), images=None) for e in episodes]


def fit_latent(train: Sequence[Episode], val: Sequence[Episode], table: InstructionTable, layout: ObsLayout,
               cameras: Cameras, config: LatentConfig, ensemble: EnsembleConfig, *, proprio: tuple[int, int] | None,
               seed: int, halt_quantile: float, info: dict[str, Any] | None = None,
               on_epoch: Callable[[int, dict[str, float]], None] | None = None) -> LatentWorldModel:
    """Stage 1: the autoencoder on real frames; stage 2: the latent ensemble on the encoded episodes."""
    from dreamgen.world_model.fit import fit_ensemble, transitions

    state_norm = Normaliser.fit(np.concatenate([e.obs for e in train]))
    # the initial weights from the seed: the global generator may have been seeded from the clock by any library
    # imported before (two fresh processes gave two different models)
    torch.manual_seed(seed)
    autoencoder = ImageAutoencoder(cameras, 0 if proprio is None else proprio[1] - proprio[0], layout.n_dynamic, config)
    inner = latent_layout(layout, autoencoder.size)
    unit = Normaliser.fit(np.zeros((2, 1)))
    placeholder = EnsembleWorldModel(ensemble, inner, 1, table, unit, unit, unit)  # replaced after stage 2
    model = LatentWorldModel(autoencoder, placeholder, layout, cameras, config, proprio, state_norm, info)
    ae_loss = fit_autoencoder(model, train, val, seed=seed, on_epoch=on_epoch)
    log.info("latent autoencoder: val image MSE %.5f, state MSE %.4f", ae_loss["image"], ae_loss["state"])
    history = ensemble.action_history
    data = [transitions(encoded(model, part), inner, table, history) for part in (train, val)]
    offset = config.epochs

    def ensemble_epoch(epoch: int, metrics: dict[str, float]) -> None:
        if on_epoch is not None:
            on_epoch(offset + epoch, metrics)

    model.dynamics = fit_ensemble(data[0], data[1], table, inner, ensemble, seed=seed, halt_quantile=halt_quantile,
                                  on_epoch=ensemble_epoch)
    model.action_dim, model.context_dim = model.dynamics.action_dim, model.dynamics.context_dim
    model.info.update({"autoencoder_val": ae_loss, **{k: v for k, v in model.dynamics.info.items()}})
    return model
