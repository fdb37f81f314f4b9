"""World-model checkpoints: ``model.safetensors`` (tensors) + ``world_model.json`` (everything else).

Loading reads JSON and safetensors only — never a pickle. ``world_model_id`` is a hash of the tensors
and the JSON, so the same checkpoint always has the same id and any change gives a new one.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dreamgen.errors import DreamgenError
from dreamgen.world_model.base import InstructionTable, ObsLayout
from dreamgen.world_model.ensemble import EnsembleConfig, EnsembleWorldModel, Normaliser

FORMAT = "dreamgen.WorldModel"
VERSION = 1
TENSORS, CONFIG = "model.safetensors", "world_model.json"


class CheckpointError(DreamgenError):
    """A world-model checkpoint is missing, damaged, or does not fit what it is used for."""


def _tensors(model: EnsembleWorldModel) -> dict[str, torch.Tensor]:
    tensors = {f"net.{k}": v for k, v in model.net.state_dict().items()}
    tensors.update({"obs_norm.mean": model.obs_norm.mean, "obs_norm.std": model.obs_norm.std,
                    "vel_norm.mean": model.vel_norm.mean, "vel_norm.std": model.vel_norm.std,
                    "target_norm.mean": model.target_norm.mean, "target_norm.std": model.target_norm.std,
                    "instructions.embeddings": torch.as_tensor(model.instructions.embeddings)})
    if model.bounds is not None:
        tensors.update({"bounds.low": model.bounds[0], "bounds.high": model.bounds[1]})
    return {k: v.detach().cpu().float().contiguous() for k, v in tensors.items()}


def save_world_model(model: EnsembleWorldModel, path: str | Path) -> str:
    """Write the checkpoint into directory ``path``; returns (and records) its ``world_model_id``."""
    from safetensors.torch import save

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    blob = save(_tensors(model))
    meta: dict[str, Any] = {
        "format": FORMAT, "version": VERSION, "kind": "ensemble",
        "config": model.config.__dict__, "layout": model.layout.to_json(), "action_dim": model.action_dim,
        "members": model.members, "disagreement_bound": model.disagreement_bound,
        "instructions": {"texts": model.instructions.texts, "tasks": model.instructions.tasks},
        "info": {k: v for k, v in model.info.items() if k != "world_model_id"},
    }
    digest = hashlib.sha256(blob + json.dumps(meta, sort_keys=True).encode()).hexdigest()
    meta["world_model_id"] = f"wm-{digest[:12]}"
    (path / TENSORS).write_bytes(blob)
    (path / CONFIG).write_text(json.dumps(meta, indent=2, sort_keys=True))
    model.info["world_model_id"] = meta["world_model_id"]
    return str(meta["world_model_id"])


def load_world_model(path: str | Path, *, layout: ObsLayout | None = None,
                     device: str = "cpu") -> EnsembleWorldModel:
    """Load a checkpoint directory; with ``layout``, refuse a model of another observation layout."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not (path / CONFIG).is_file() or not (path / TENSORS).is_file():
        raise CheckpointError(f"{path}: not a world-model checkpoint (needs {CONFIG} and {TENSORS}); "
                              "train one with `dreamgen train-world-model`")
    try:
        meta = json.loads((path / CONFIG).read_text())
        tensors = load_file(str(path / TENSORS))
    except (json.JSONDecodeError, SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path}: damaged world-model checkpoint ({exc})") from exc
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise CheckpointError(f"{path}/{CONFIG}: format {meta.get('format')!r} version {meta.get('version')!r}; "
                              f"this dreamgen reads {FORMAT!r} version {VERSION}")
    saved = ObsLayout.from_json(meta["layout"])
    if layout is not None and saved != layout:
        raise CheckpointError(f"{path}: the model predicts observation layout {saved.name!r} "
                              f"({saved.obs_dim} dims: {saved}); this use needs {layout.name!r} "
                              f"({layout.obs_dim} dims)")
    table = InstructionTable(list(meta["instructions"]["texts"]), list(meta["instructions"]["tasks"]),
                             tensors.pop("instructions.embeddings").numpy().astype(np.float32))
    info = dict(meta.get("info", {}), world_model_id=meta["world_model_id"])
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
