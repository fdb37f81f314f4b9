"""Fit an ensemble world model on real episodes: split by episode, bootstrap minibatches, early stop.

``transitions(episodes, layout)`` turns episodes into ``(obs, action, cond_index, target, success, done)``
arrays (frame ``t`` → ``t+1``; an episode's last frame has no next observation and is dropped).
``fit_ensemble(train, val, table, config, ...) -> EnsembleWorldModel`` trains ``members`` members
on bootstrap draws of ``train``, keeps each member's best snapshot on ``val``, and keeps the
``elites`` best members. The disagreement bound is calibrated on ``val`` as well.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from dreamgen.types import Episode
from dreamgen.world_model.base import InstructionTable, ObsLayout, action_context
from dreamgen.world_model.ensemble import EnsembleConfig, EnsembleWorldModel, Normaliser

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Transitions:
    """Aligned transition arrays; ``target`` is ``[Δ dynamic dims, reward]`` in raw units."""

    obs: np.ndarray  # [N, O]
    action: np.ndarray  # [N, A]
    context: np.ndarray  # [N, k*A] the k previous actions, newest first (zeros before an episode's start)
    instruction: np.ndarray  # [N] row in the instruction table
    target: np.ndarray  # [N, D + 1]
    success: np.ndarray  # [N] float32
    done: np.ndarray  # [N] float32
    real: np.ndarray | None = None  # [N] float32: 1 a real transition (every loss), 0 a dreamed state whose success
    #                                  the audit refuted (the success head's loss only); None: every row real

    def __len__(self) -> int:
        return len(self.obs)

    def joined(self, other: Transitions) -> Transitions:
        """Both sets of rows, ``real`` filled with 1 where either had none."""
        arrays = {}
        for f in dataclasses.fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if f.name == "real":
                a = np.ones(len(self), np.float32) if a is None else a
                b = np.ones(len(other), np.float32) if b is None else b
            arrays[f.name] = np.concatenate([a, b])
        return Transitions(**arrays)


def transitions(episodes: Sequence[Episode], layout: ObsLayout, table: InstructionTable,
                action_history: int = 0) -> Transitions:
    parts: dict[str, list[np.ndarray]] = {f.name: [] for f in dataclasses.fields(Transitions) if f.name != "real"}
    dyn = slice(*layout.dynamic)
    for episode in episodes:
        n = len(episode) - 1
        if n < 1:
            continue
        parts["obs"].append(episode.obs[:-1])
        parts["action"].append(episode.action[:-1])
        parts["context"].append(action_context(episode.action, action_history)[:-1])
        parts["instruction"].append(np.repeat(table.lookup([episode.meta["instruction"]]), n))
        delta = episode.obs[1:, dyn] - episode.obs[:-1, dyn]
        parts["target"].append(np.concatenate([delta, episode.reward[:-1, None]], axis=1))
        parts["success"].append(episode.success[:-1].astype(np.float32))
        parts["done"].append(episode.done[:-1].astype(np.float32))
    if not parts["obs"]:
        raise ValueError("no transitions: every episode has fewer than 2 frames")
    return Transitions(**{k: np.concatenate(v).astype(np.int64 if k == "instruction" else np.float32)
                          for k, v in parts.items()})


def false_successes(dreams: Sequence[Episode], layout: ObsLayout, table: InstructionTable, action_history: int,
                    steps: int) -> Transitions:
    """Head-only negatives from dreams the audit refuted (the dream said success, the real replay of its actions
    did not succeed): each dream's last ``steps`` transitions — the dreamed states where its success head fired
    and just before — labelled "not a success" (``success`` 0, ``real`` 0: no dynamics, reward or done target,
    a dreamed state is not a real one). The previous actions are the dream's own."""
    rows = transitions(dreams, layout, table, action_history)
    keep = np.concatenate([np.arange(n) >= n - steps for n in (len(d) - 1 for d in dreams) if n >= 1])
    picked = {f.name: getattr(rows, f.name)[keep] for f in dataclasses.fields(rows) if f.name != "real"}
    picked["success"] = np.zeros_like(picked["success"])
    return Transitions(**picked, real=np.zeros(int(keep.sum()), np.float32))


def split_episodes(tasks: Sequence[str], fractions: tuple[float, float], rng: np.random.Generator,
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of (train, val, test) episodes, stratified by task; each split gets >= 1 per task when
    the task has >= 3 episodes."""
    tasks_arr = np.asarray(tasks)
    train, val, test = [], [], []
    for task in dict.fromkeys(tasks):
        idx = rng.permutation(np.flatnonzero(tasks_arr == task))
        n_val = max(1, round(fractions[0] * len(idx))) if len(idx) >= 3 else 0
        n_test = max(1, round(fractions[1] * len(idx))) if len(idx) >= 3 else 0
        val += idx[:n_val].tolist()
        test += idx[n_val:n_val + n_test].tolist()
        train += idx[n_val + n_test:].tolist()
    return (np.sort(np.array(train, dtype=np.int64)), np.sort(np.array(val, dtype=np.int64)),
            np.sort(np.array(test, dtype=np.int64)))


def _losses(model: EnsembleWorldModel, obs: torch.Tensor, action: torch.Tensor, context: torch.Tensor,
            cond: torch.Tensor, target: torch.Tensor, success: torch.Tensor,
            done: torch.Tensor, real: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-member (NLL + BCE, MSE of normalised targets) for member-stacked batches ``[K, b, ...]``.
    ``real[K, b]``: 1 where a row is a real transition, 0 where it teaches the success head only (its other
    losses are averaged over the real rows); None: every row is real."""
    net = model.net
    out = net(model.inputs(obs, action, context), net.condition(cond))
    mean, logvar, success_logit, done_logit = net.split(out)
    y = model.target_norm.scale(target)
    sq = (mean - y) ** 2
    nll = sq * torch.exp(-logvar) + logvar
    bce = nn.functional.binary_cross_entropy_with_logits
    if real is None:
        heads = bce(success_logit, success, reduction="none").mean(1) + bce(done_logit, done, reduction="none").mean(1)
    else:  # the dynamics, reward, done and contact losses over the real rows; success over every row
        share = real / real.sum(1, keepdim=True).clamp_min(1.0)
        heads = bce(success_logit, success, reduction="none").mean(1) + (bce(done_logit, done, reduction="none")
                                                                         * share).sum(1)
    if model.config.gate is not None:  # the gated dims' Δ is learned where they move; the contact head, where
        gate = slice(*model.config.gate)
        moves = (torch.linalg.vector_norm(target[..., gate], dim=-1) > model.config.gate_mm / 1000).float()
        weight = torch.ones_like(sq)
        weight[..., gate] = moves[..., None]
        nll, sq = nll * weight, sq * weight
        contact = bce(out[..., 2 * net.n_gauss + 2], moves, reduction="none")
        heads = heads + (contact.mean(1) if real is None else (contact * share).sum(1))
    if real is None:
        return nll.mean((1, 2)) + heads, sq.mean((1, 2))
    return (nll.mean(2) * share).sum(1) + heads, (sq.mean(2) * share).sum(1)


def _stack(data: Transitions, index: torch.Tensor, table: torch.Tensor) -> tuple[Any, ...]:
    """Gather ``index[K, b]`` rows of every array as member-stacked tensors."""
    def take(x: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(x)[index]

    return (take(data.obs), take(data.action), take(data.context), table[torch.as_tensor(data.instruction)[index]],
            take(data.target), take(data.success), take(data.done), None if data.real is None else take(data.real))


def fit_ensemble(train: Transitions, val: Transitions, table: InstructionTable, layout: ObsLayout,
                 config: EnsembleConfig, *, seed: int, halt_quantile: float = 0.99,
                 info: dict[str, Any] | None = None,
                 on_epoch: Callable[[int, dict[str, float]], None] | None = None,
                 init: EnsembleWorldModel | None = None, negatives: Transitions | None = None) -> EnsembleWorldModel:
    """Train, early-stop on ``val``, keep the elites and calibrate the disagreement bound.

    ``negatives``: head-only rows (``false_successes``) drawn with ``train``'s rows; the normalisers, range and
    every loss but the success head's come from the real rows alone.

    ``init``: fine-tune that (pretrained) model instead of starting from random weights. Its architecture,
    members and normalisers are kept (``fine_tune_config``), its range widens to cover ``train``, and a member
    keeps its pretrained weights unless training beats them on ``val``."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    dyn = train.obs[:, slice(*layout.dynamic)]
    low, high = torch.as_tensor(dyn.min(0)), torch.as_tensor(dyn.max(0))
    if init is None:
        model = EnsembleWorldModel(config, layout, train.action.shape[1], table, Normaliser.fit(train.obs),
                                   Normaliser.fit(layout.velocity(train.obs)), Normaliser.fit(train.target, constant=0.0),
                                   info=info, bounds=(low, high))
    else:
        config = fine_tune_config(init, config)
        if init.bounds is not None:
            low, high = torch.minimum(low, init.bounds[0].cpu()), torch.maximum(high, init.bounds[1].cpu())
        model = EnsembleWorldModel(config, layout, train.action.shape[1], table, init.obs_norm, init.vel_norm,
                                   init.target_norm, info=info, bounds=(low, high),
                                   gated_disagreement=init.gated_disagreement)
        model.net.load_state_dict(init.net.state_dict())
    if negatives is not None and len(negatives):
        train = train.joined(negatives)
    emb = torch.as_tensor(table.embeddings, dtype=torch.float32)
    optim = torch.optim.AdamW(model.net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    k, n = config.members, len(train)
    val_batch = _stack(val, torch.arange(len(val)).expand(k, -1), emb)
    best = torch.full((k,), float("inf"))
    if init is not None:  # the pretrained weights are each member's first snapshot: fine-tuning must beat them
        model.net.eval()
        with torch.no_grad():
            best = _losses(model, *val_batch)[1]
    snapshot = {name: p.detach().clone() for name, p in model.net.state_dict().items()}
    stale, steps = 0, max(1, n // config.batch_size)
    for epoch in range(config.max_epochs):
        model.net.train()
        train_loss = 0.0
        for _ in range(steps):
            index = torch.randint(n, (k, config.batch_size), generator=generator)  # bootstrap per member
            loss, _ = _losses(model, *_stack(train, index, emb))
            bounds = 0.01 * (model.net.max_logvar.sum() - model.net.min_logvar.sum())
            optim.zero_grad(set_to_none=True)
            (loss.sum() + bounds).backward()
            optim.step()
            train_loss += loss.detach().mean().item() / steps
        model.net.eval()
        with torch.no_grad():
            val_loss, val_mse = _losses(model, *val_batch)
        improved = val_mse < best * 0.99
        if improved.any():
            state = model.net.state_dict()
            for name, value in state.items():
                if value.shape[0] == k:  # per-member tensors: copy the improved members' rows
                    snapshot[name][improved] = value.detach()[improved]
                else:
                    snapshot[name] = value.detach().clone()
            best = torch.where(improved, val_mse, best)
            stale = 0
        else:
            stale += 1
        if on_epoch is not None:
            on_epoch(epoch, {"wm/train_nll": train_loss, "wm/val_nll": float(val_loss.mean()),
                             "wm/val_mse": float(val_mse.mean()), "wm/best_val_mse": float(best.min())})
        if stale >= config.patience:
            break
    model.net.load_state_dict(snapshot)
    elites = torch.argsort(best)[:config.elites].tolist()
    model.net.keep(elites)
    model.members = len(elites)
    model.info.update({"epochs": epoch + 1, "elites": elites, "elite_val_mse": best[elites].tolist()})
    model.disagreement_bound = calibrate_bound(model, val, halt_quantile)
    log.info("world model: %d epochs, elites %s, val mse %.4f, disagreement bound %.3f", epoch + 1,
             elites, float(best[elites].mean()), model.disagreement_bound)
    return model


def fine_tune_config(init: EnsembleWorldModel, config: EnsembleConfig) -> EnsembleConfig:
    """The settings of a fine-tune of ``init``: its architecture (width, depth, activation, action history,
    contact gate) and its members, the run's training settings (lr, weight decay, batch, epochs, patience) and
    elites (at most its members)."""
    return dataclasses.replace(init.config, members=init.members, elites=min(config.elites, init.members),
                               lr=config.lr, weight_decay=config.weight_decay, batch_size=config.batch_size,
                               max_epochs=config.max_epochs, patience=config.patience)


def calibrate_bound(model: EnsembleWorldModel, data: Transitions, quantile: float) -> float:
    """The ``quantile`` of the model's disagreement on real transitions (MOReL's halting threshold)."""
    emb = torch.as_tensor(model.instructions.embeddings, dtype=torch.float32)
    pred = model.predict(torch.as_tensor(data.obs), torch.as_tensor(data.action),
                         emb[torch.as_tensor(data.instruction)], propagation="mean",
                         context=torch.as_tensor(data.context))
    return float(torch.quantile(pred.disagreement, quantile))
