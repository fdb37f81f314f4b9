"""World-model checkpoints: ``model.safetensors`` (tensors) + ``world_model.json`` (everything else).

``kind`` says which model: ``ensemble`` (the state model) or ``latent`` (cameras: the autoencoder's
tensors under ``autoencoder.``, its latent ensemble's under ``dynamics.``, the cameras it sees).

Loading reads JSON and safetensors only — never a pickle. ``world_model_id`` is a hash of the tensors
and the JSON, so the same checkpoint always has the same id and any change gives a new one; it is
recomputed on load (``dreamgen.checkpoints``), so an edited checkpoint is refused, never loaded under
its old id.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dreamgen.checkpoints import content_digest, loading, read_checkpoint, write_checkpoint
from dreamgen.errors import CheckpointError
from dreamgen.spaces import Cameras
from dreamgen.world_model.base import InstructionTable, ObsLayout
from dreamgen.world_model.ensemble import EnsembleConfig, EnsembleWorldModel, Normaliser
from dreamgen.world_model.latent import ImageAutoencoder, LatentConfig, LatentWorldModel

FORMAT = "dreamgen.WorldModel"
VERSION = 1
CONFIG = "world_model.json"
MAKE = "train one with `dreamgen train-world-model`"
__all__ = ["CheckpointError", "load_world_model", "save_world_model"]


def _model_id(digest: str) -> str:
    return f"wm-{digest[:12]}"


def _tensors(model: EnsembleWorldModel) -> dict[str, torch.Tensor]:
    tensors = {f"net.{k}": v for k, v in model.net.state_dict().items()}
    tensors.update({"obs_norm.mean": model.obs_norm.mean, "obs_norm.std": model.obs_norm.std,
                    "vel_norm.mean": model.vel_norm.mean, "vel_norm.std": model.vel_norm.std,
                    "target_norm.mean": model.target_norm.mean, "target_norm.std": model.target_norm.std,
                    "instructions.embeddings": torch.as_tensor(model.instructions.embeddings)})
    if model.bounds is not None:
        tensors.update({"bounds.low": model.bounds[0], "bounds.high": model.bounds[1]})
    return {k: v.detach().cpu().float().contiguous() for k, v in tensors.items()}


def _ensemble_meta(model: EnsembleWorldModel) -> dict[str, Any]:
    return {"config": model.config.__dict__, "layout": model.layout.to_json(), "action_dim": model.action_dim,
            "members": model.members, "disagreement_bound": model.disagreement_bound}


def save_world_model(model: Any, path: str | Path) -> str:
    """Write the checkpoint (a state ensemble or a latent model) into directory ``path``; returns (and
    records) its ``world_model_id``."""
    meta: dict[str, Any] = {
        "format": FORMAT, "version": VERSION, "kind": model.kind,
        "instructions": {"texts": model.instructions.texts, "tasks": model.instructions.tasks},
        "info": {k: v for k, v in model.info.items() if k != "world_model_id"},
    }
    if isinstance(model, LatentWorldModel):
        meta.update({"layout": model.layout.to_json(), "cameras": model.cameras.to_json(),
                     "latent": dataclasses.asdict(model.config), "proprio": model.proprio,
                     "dynamics": _ensemble_meta(model.dynamics)})
        tensors = {f"dynamics.{k}": v for k, v in _tensors(model.dynamics).items()}
        tensors["instructions.embeddings"] = tensors.pop("dynamics.instructions.embeddings")
        tensors.update({f"autoencoder.{k}": v.detach().cpu().float().contiguous()
                        for k, v in model.autoencoder.state_dict().items()})
        tensors.update({"state_norm.mean": model.state_norm.mean.cpu(), "state_norm.std": model.state_norm.std.cpu()})
    else:
        meta.update(_ensemble_meta(model))
        tensors = _tensors(model)
    written = write_checkpoint(path, tensors, meta, CONFIG,
                               named=lambda digest: {"world_model_id": _model_id(digest)})
    model.info["world_model_id"] = written["world_model_id"]
    return str(written["world_model_id"])


def load_world_model(path: str | Path, *, layout: ObsLayout | None = None, device: str = "cpu") -> Any:
    """Load a checkpoint directory (``kind`` ensemble: an ``EnsembleWorldModel``; latent: a
    ``LatentWorldModel``); with ``layout``, refuse a model of another observation layout."""
    path = Path(path)
    def by_id(spec: dict[str, Any], blob: bytes) -> bool:  # written before content_sha256: the id is the hash
        return spec.get("world_model_id") == _model_id(content_digest(blob, spec, exclude=("world_model_id",)))

    meta, tensors = read_checkpoint(path, CONFIG, "world-model", MAKE, exclude=("world_model_id",), legacy=by_id)
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise CheckpointError(f"{path}/{CONFIG}: format {meta.get('format')!r} version {meta.get('version')!r}; "
                              f"this dreamgen reads {FORMAT!r} version {VERSION}")
    if "content_sha256" in meta and meta.get("world_model_id") != _model_id(meta["content_sha256"]):
        raise CheckpointError(f"{path / CONFIG}: world_model_id {meta.get('world_model_id')!r} was edited (the "
                              f"content gives {_model_id(meta['content_sha256'])!r}); {MAKE}")
    with loading(path, "world-model", MAKE):
        return _build(path, meta, tensors, layout, device)


def _build(path: Path, meta: dict[str, Any], tensors: dict[str, Any], layout: ObsLayout | None,
           device: str) -> Any:
    saved = ObsLayout.from_json(meta["layout"])
    if layout is not None and saved != layout:
        raise CheckpointError(f"{path}: the model predicts observation layout {saved.name!r} "
                              f"({saved.obs_dim} dims: {saved}); this use needs {layout.name!r} "
                              f"({layout.obs_dim} dims)")
    table = InstructionTable(list(meta["instructions"]["texts"]), list(meta["instructions"]["tasks"]),
                             tensors.pop("instructions.embeddings").numpy().astype(np.float32))
    info = dict(meta.get("info", {}), world_model_id=meta["world_model_id"])
    kind = meta.get("kind", "ensemble")
    if kind == "ensemble":
        return _ensemble(path, meta, tensors, table, info, device)
    if kind != "latent":
        raise CheckpointError(f"{path}/{CONFIG}: kind {kind!r}; this dreamgen reads kind ensemble or latent")
    cameras, config = Cameras.from_json(meta["cameras"]), LatentConfig(**meta["latent"])
    assert cameras is not None
    dynamics = _ensemble(path, meta["dynamics"], {k.removeprefix("dynamics."): v for k, v in tensors.items()
                                                  if k.startswith("dynamics.")}, table, {}, device)
    proprio = None if meta["proprio"] is None else (int(meta["proprio"][0]), int(meta["proprio"][1]))
    autoencoder = ImageAutoencoder(cameras, 0 if proprio is None else proprio[1] - proprio[0], saved.n_dynamic, config)
    try:
        autoencoder.load_state_dict({k.removeprefix("autoencoder."): v for k, v in tensors.items()
                                     if k.startswith("autoencoder.")})
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: tensors do not match {CONFIG} ({exc})") from exc
    return LatentWorldModel(autoencoder, dynamics, saved, cameras, config, proprio,
                            Normaliser(tensors["state_norm.mean"], tensors["state_norm.std"]), info, device)


def _ensemble(path: Path, meta: dict[str, Any], tensors: dict[str, Any], table: InstructionTable,
              info: dict[str, Any], device: str) -> EnsembleWorldModel:
    saved = ObsLayout.from_json(meta["layout"])
    model = EnsembleWorldModel(
        EnsembleConfig(**meta["config"]), saved, int(meta["action_dim"]), table,
        Normaliser(tensors.pop("obs_norm.mean"), tensors.pop("obs_norm.std")),
        Normaliser(tensors.pop("vel_norm.mean"), tensors.pop("vel_norm.std")),
        Normaliser(tensors.pop("target_norm.mean"), tensors.pop("target_norm.std")),
        members=int(meta["members"]), disagreement_bound=float(meta["disagreement_bound"]), info=info,
        device=device, bounds=(tensors.pop("bounds.low"), tensors.pop("bounds.high")) if "bounds.low" in tensors else None,
    )
    try:
        model.net.load_state_dict({k.removeprefix("net."): v for k, v in tensors.items()})
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: tensors do not match {CONFIG} ({exc})") from exc
    model.net.eval()
    return model
