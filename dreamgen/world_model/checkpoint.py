"""World-model checkpoints: ``model.safetensors`` (tensors) + ``world_model.json`` (everything else).

``kind`` says which model, by its name in ``dreamgen.world_model.kinds`` (``ensemble``: the state model;
``latent``: cameras, the autoencoder's tensors under ``autoencoder.``, its latent ensemble's under
``dynamics.``, the cameras it sees); the kind writes and reads its own tensors and JSON, and every kind's
checkpoint also holds the instruction table, ``info`` and the observation layout.

Loading reads JSON and safetensors only — never a pickle. ``world_model_id`` is a hash of the tensors
and the JSON, so the same checkpoint always has the same id and any change gives a new one; it is
recomputed on load (``dreamgen.checkpoints``), so an edited checkpoint is refused, never loaded under
its old id.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from dreamgen.checkpoints import content_digest, loading, read_checkpoint, write_checkpoint
from dreamgen.errors import CheckpointError, ConfigError
from dreamgen.world_model import kinds
from dreamgen.world_model.base import InstructionTable, ObsLayout

FORMAT = "dreamgen.WorldModel"
VERSION = 1
CONFIG = "world_model.json"
MAKE = "train one with `dreamgen train-world-model`"
__all__ = ["CheckpointError", "load_world_model", "save_world_model"]


def _model_id(digest: str) -> str:
    return f"wm-{digest[:12]}"


def save_world_model(model: Any, path: str | Path) -> str:
    """Write the checkpoint of a model of any registered kind into directory ``path``; returns (and records)
    its ``world_model_id``."""
    meta: dict[str, Any] = {
        "format": FORMAT, "version": VERSION, "kind": model.kind, "layout": model.layout.to_json(),
        "instructions": {"texts": model.instructions.texts, "tasks": model.instructions.tasks},
        "info": {k: v for k, v in model.info.items() if k != "world_model_id"},
    }
    tensors, own = kinds.get(model.kind, where="the model's kind").save(model)
    meta.update(own)
    tensors.setdefault("instructions.embeddings", torch.as_tensor(model.instructions.embeddings, dtype=torch.float32))
    written = write_checkpoint(path, tensors, meta, CONFIG,
                               named=lambda digest: {"world_model_id": _model_id(digest)})
    model.info["world_model_id"] = written["world_model_id"]
    return str(written["world_model_id"])


def load_world_model(path: str | Path, *, layout: ObsLayout | None = None, device: str = "cpu") -> Any:
    """Load a checkpoint directory as the model its ``kind`` makes (``dreamgen.world_model.kinds``); with
    ``layout``, refuse a model of another observation layout."""
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
    try:
        kind = kinds.get(meta.get("kind", "ensemble"), where=f"{path}/{CONFIG}: kind")
    except ConfigError as exc:
        raise CheckpointError(str(exc)) from None
    return kind.load(kinds.LoadRequest(path, meta, tensors, table, info, saved, device))
