"""World-model kinds by name: one spelling from ``world_model.kind`` to the checkpoint's ``kind``.

A kind is one ``ModelKind``: how to check its settings, fit it on real episodes, and save and load its
tensors. ``train-world-model`` looks the configured kind up and the checkpoint loader looks up the kind a
checkpoint records; nothing else asks which kind a model is (callers use the ``WorldModel`` contract).

    ensemble  the probabilistic ensemble on the observation vector (``dreamgen.world_model.ensemble``)
    latent    cameras: an autoencoder and the ensemble in its latent space (``dreamgen.world_model.latent``)

A new kind is a module that calls ``register(ModelKind(...))``: imported before use (a test does that), or
installed as a package with an entry point in group ``dreamgen.world_models`` naming the module, which is
imported the first time a kind is not found (so Ray workers and the CLI find it too).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from dreamgen.errors import CheckpointError, ConfigError
from dreamgen.registry import Registry
from dreamgen.spaces import Cameras, ObsLayout
from dreamgen.types import Episode
from dreamgen.world_model.base import InstructionTable

ENTRY_POINTS = "dreamgen.world_models"


@dataclasses.dataclass
class FitRequest:
    """What a kind is fitted on: real ``train`` / ``val`` episodes (with their frames when the kind needs
    ``images``), the instruction table, the robot's layout and parts, the store's cameras, and the
    ``world_model`` section's settings (``settings``; ``ensemble``: its ensemble part, checked)."""

    train: list[Episode]
    val: list[Episode]
    table: InstructionTable
    layout: ObsLayout
    parts: Mapping[str, Any]
    cameras: Cameras | None
    settings: Mapping[str, Any]
    ensemble: Any  # EnsembleConfig
    seed: int
    halt_quantile: float
    info: dict[str, Any]
    on_epoch: Callable[[int, dict[str, float]], None] | None = None
    risk: tuple[tuple[str, ...], Any, list] | None = None  # (events, RiskConfig, replays): train a safety head too
    # (on the train episodes + the audited replays); None: none
    init: Any = None  # a checkpoint of this kind to fine-tune (``world_model.init``), loaded; None: from scratch
    negatives: tuple[list[Episode], int] | None = None  # (dreams the audit refuted, steps): their last steps teach
    # the success head "not a success" (``world_model.false_successes``); None: none


@dataclasses.dataclass
class LoadRequest:
    """What a checkpoint holds, read and verified: its JSON (``meta``), tensors (the table's removed), the
    instruction table, the model's ``info`` (with its id) and layout, and the device to load onto."""

    path: Path
    meta: dict[str, Any]
    tensors: dict[str, torch.Tensor]
    table: InstructionTable
    info: dict[str, Any]
    layout: ObsLayout
    device: str


@dataclasses.dataclass(frozen=True)
class ModelKind:
    """One kind of world model. ``check(settings)`` refuses bad settings before anything starts (returns the
    kind's own config object); ``epochs(settings)`` is the progress bar's length; ``fit(FitRequest)`` trains
    one; ``save(model) -> (tensors, meta)`` and ``load(LoadRequest) -> model`` are its checkpoint (the
    instruction table, ``info``, ``layout`` and ``kind`` are written and read for every kind)."""

    name: str
    summary: str  # one line, for the list of kinds in a refusal
    fit: Callable[[FitRequest], Any]
    save: Callable[[Any], tuple[dict[str, torch.Tensor], dict[str, Any]]]
    load: Callable[[LoadRequest], Any]
    check: Callable[[Mapping[str, Any]], Any] = lambda settings: None
    epochs: Callable[[Mapping[str, Any]], int] = lambda settings: int(settings["max_epochs"])
    images: bool = False  # fitted on camera frames (needs an image store)
    safety_head: bool = False  # can train a safety head (``FitRequest.risk``)
    fine_tunes: bool = False  # can start from a checkpoint of its kind (``FitRequest.init``)
    head_negatives: bool = False  # its success head can learn from refuted dreams (``FitRequest.negatives``)


KINDS: Registry[ModelKind] = Registry("world-model kind", ENTRY_POINTS)
register = KINDS.register


def get(name: str, *, where: str = "world_model.kind") -> ModelKind:
    """The kind called ``name``, or a ``ConfigError`` naming ``where`` and every kind there is."""
    kind = KINDS.find(name)
    if kind is not None:
        return kind
    listing = "; ".join(f"{k.name} ({k.summary})" for k in KINDS)
    hint = " (one spelling from config to checkpoint: the state model is `ensemble`)" if name == "state" else ""
    raise ConfigError(f"{where}={name!r} is no world-model kind{hint}; the kinds: {listing}")


# ---------------------------------------------------------------------- the ensemble
def _ensemble_tensors(model: Any) -> dict[str, torch.Tensor]:
    tensors = {f"net.{k}": v for k, v in model.net.state_dict().items()}
    tensors.update({"obs_norm.mean": model.obs_norm.mean, "obs_norm.std": model.obs_norm.std,
                    "vel_norm.mean": model.vel_norm.mean, "vel_norm.std": model.vel_norm.std,
                    "target_norm.mean": model.target_norm.mean, "target_norm.std": model.target_norm.std,
                    "instructions.embeddings": torch.as_tensor(model.instructions.embeddings)})
    if model.bounds is not None:
        tensors.update({"bounds.low": model.bounds[0], "bounds.high": model.bounds[1]})
    if model.risk is not None:
        tensors.update({f"risk.{k}": v for k, v in model.risk.state_dict().items()})
    return {k: v.detach().cpu().float().contiguous() for k, v in tensors.items()}


GATED = "gated"  # meta["disagreement"]: the gated dims count as each member predicts them (absent: raw Δ)


def _ensemble_meta(model: Any) -> dict[str, Any]:
    meta = {"config": model.config.__dict__, "layout": model.layout.to_json(), "action_dim": model.action_dim,
            "members": model.members, "disagreement_bound": model.disagreement_bound}
    if model.gated_disagreement:  # written only where it matters: an older checkpoint saved again keeps its id
        meta["disagreement"] = GATED
    if model.risk is not None:
        meta["risk"] = model.risk.meta()
    return meta


def _save_ensemble(model: Any) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    return _ensemble_tensors(model), _ensemble_meta(model)


def _load_ensemble(request: LoadRequest) -> Any:
    from dreamgen.world_model.ensemble import EnsembleConfig, EnsembleWorldModel, Normaliser

    meta, tensors = request.meta, request.tensors
    model = EnsembleWorldModel(
        EnsembleConfig(**meta["config"]), ObsLayout.from_json(meta["layout"]), int(meta["action_dim"]), request.table,
        Normaliser(tensors.pop("obs_norm.mean"), tensors.pop("obs_norm.std")),
        Normaliser(tensors.pop("vel_norm.mean"), tensors.pop("vel_norm.std")),
        Normaliser(tensors.pop("target_norm.mean"), tensors.pop("target_norm.std")),
        members=int(meta["members"]), disagreement_bound=float(meta["disagreement_bound"]), info=request.info,
        device=request.device,
        bounds=(tensors.pop("bounds.low"), tensors.pop("bounds.high")) if "bounds.low" in tensors else None,
        gated_disagreement=meta.get("disagreement") == GATED,
    )
    risk = {k.removeprefix("risk."): tensors.pop(k) for k in [k for k in tensors if k.startswith("risk.")]}
    try:
        if "risk" in meta:
            from dreamgen.world_model.risk import RiskConfig, RiskHead

            head = RiskHead(meta["risk"]["events"], RiskConfig(**meta["risk"]["config"]),
                            int(risk["net.weights.0"].shape[1]))
            head.load_state_dict(risk)
            head.report = meta["risk"].get("report", {})
            model.attach_risk(head)
        model.net.load_state_dict({k.removeprefix("net."): v for k, v in tensors.items()})
    except RuntimeError as exc:
        raise CheckpointError(f"{request.path}: tensors do not match world_model.json ({exc})") from exc
    model.net.eval()
    return model


def _fit_ensemble(request: FitRequest) -> Any:
    from dreamgen.seeding import derive_seed
    from dreamgen.world_model.fit import false_successes, fit_ensemble, transitions

    history = request.ensemble.action_history
    train, val = (transitions(part, request.layout, request.table, history) for part in (request.train, request.val))
    negatives = None
    if request.negatives is not None:
        dreams, steps = request.negatives
        negatives = false_successes(dreams, request.layout, request.table, history, steps)
    model = fit_ensemble(train, val, request.table, request.layout, request.ensemble, seed=request.seed,
                         halt_quantile=request.halt_quantile, info=request.info, on_epoch=request.on_epoch,
                         init=request.init, negatives=negatives)
    if request.risk is not None:  # the safety head, on its own seed: the dynamics are as without it
        from dreamgen.world_model.risk import fit_risk

        events, config, replays = request.risk  # replays: audited dreams' real replays, for training only
        fit_risk(model, [*request.train, *replays], request.val, events, config,
                 seed=derive_seed(request.seed, "safety-head"))
    return model


# ---------------------------------------------------------------------- the latent model
def _latent_config(settings: Mapping[str, Any]) -> Any:
    from dreamgen.world_model.latent import LatentConfig

    try:
        return LatentConfig(**settings["latent"])
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"world_model.latent: {exc}") from None


def _fit_latent(request: FitRequest) -> Any:
    from dreamgen.world_model.latent import fit_latent

    assert request.cameras is not None
    hand = request.parts.get("hand")
    return fit_latent(request.train, request.val, request.table, request.layout, request.cameras,
                      _latent_config(request.settings), request.ensemble,
                      proprio=None if hand is None else (hand.start, hand.stop), seed=request.seed,
                      halt_quantile=request.halt_quantile, info=request.info, on_epoch=request.on_epoch)


def _save_latent(model: Any) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    meta = {"layout": model.layout.to_json(), "cameras": model.cameras.to_json(),
            "latent": dataclasses.asdict(model.config), "proprio": model.proprio,
            "dynamics": _ensemble_meta(model.dynamics)}
    tensors = {f"dynamics.{k}": v for k, v in _ensemble_tensors(model.dynamics).items()}
    tensors["instructions.embeddings"] = tensors.pop("dynamics.instructions.embeddings")
    tensors.update({f"autoencoder.{k}": v.detach().cpu().float().contiguous()
                    for k, v in model.autoencoder.state_dict().items()})
    tensors.update({"state_norm.mean": model.state_norm.mean.cpu(), "state_norm.std": model.state_norm.std.cpu()})
    return tensors, meta


def _load_latent(request: LoadRequest) -> Any:
    from dreamgen.world_model.ensemble import Normaliser
    from dreamgen.world_model.latent import ImageAutoencoder, LatentConfig, LatentWorldModel

    meta, tensors = request.meta, request.tensors
    cameras, config = Cameras.from_json(meta["cameras"]), LatentConfig(**meta["latent"])
    assert cameras is not None
    inner = {k.removeprefix("dynamics."): v for k, v in tensors.items() if k.startswith("dynamics.")}
    dynamics = _load_ensemble(dataclasses.replace(request, meta=meta["dynamics"], tensors=inner, info={}))
    proprio = None if meta["proprio"] is None else (int(meta["proprio"][0]), int(meta["proprio"][1]))
    layout = request.layout
    autoencoder = ImageAutoencoder(cameras, 0 if proprio is None else proprio[1] - proprio[0], layout.n_dynamic, config)
    try:
        autoencoder.load_state_dict({k.removeprefix("autoencoder."): v for k, v in tensors.items()
                                     if k.startswith("autoencoder.")})
    except RuntimeError as exc:
        raise CheckpointError(f"{request.path}: tensors do not match world_model.json ({exc})") from exc
    return LatentWorldModel(autoencoder, dynamics, layout, cameras, config, proprio,
                            Normaliser(tensors["state_norm.mean"], tensors["state_norm.std"]), request.info,
                            request.device)


register(ModelKind("ensemble", "the probabilistic ensemble on the observation vector", _fit_ensemble,
                   _save_ensemble, _load_ensemble, safety_head=True, fine_tunes=True, head_negatives=True))
register(ModelKind("latent", "cameras: encode, predict in latent space, decode", _fit_latent, _save_latent,
                   _load_latent, check=_latent_config,
                   epochs=lambda s: int(s["latent"]["epochs"]) + int(s["max_epochs"]), images=True))

__all__ = ["FitRequest", "KINDS", "LoadRequest", "ModelKind", "get", "register"]
