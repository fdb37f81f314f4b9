"""World-model fidelity on held-out real episodes (EVALUATION.md §3).

- one-step nMSE of the dynamic dims (MSE / per-dim variance of the real next state, over dims that
  vary), next to the copy baseline ``s' = s``;
- open-loop error: from ``t0`` in a held-out episode, feed the recorded actions for ``H`` steps and
  measure the position error of each named part of the observation (the embodiment's ``parts`` that the
  model predicts, e.g. hand and object) in millimetres (observations in metres; median and p90), next to
  the copy baseline (nothing moves).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dreamgen.types import Episode
from dreamgen.world_model.base import ObsLayout, WorldModel, action_context, next_context
from dreamgen.world_model.fit import Transitions


def _cond(model: WorldModel, rows: np.ndarray) -> torch.Tensor:
    """The model's conditioning for instruction-table ``rows``."""
    return model.condition(torch.as_tensor(model.instructions.embeddings[rows], device=model.device))


def one_step_nmse(model: WorldModel, data: Transitions) -> dict[str, float]:
    """nMSE of the predicted next dynamic state (ensemble mean) and of the copy baseline."""
    dyn, n_dyn = slice(*model.layout.dynamic), model.layout.n_dynamic
    obs = torch.as_tensor(data.obs, device=model.device)
    cond = _cond(model, data.instruction)
    pred = model.predict(obs, torch.as_tensor(data.action, device=model.device), cond, propagation="mean",
                         context=torch.as_tensor(data.context, device=model.device))
    real = data.obs[:, dyn] + data.target[:, :n_dyn]
    var = real.var(0)
    vary = var > 1e-10
    model_mse = ((pred.next_obs[:, dyn].cpu().numpy() - real) ** 2).mean(0)
    copy_mse = ((data.obs[:, dyn] - real) ** 2).mean(0)
    return {"nmse": float((model_mse[vary] / var[vary]).mean()), "copy_nmse": float((copy_mse[vary] / var[vary]).mean()),
            "dims": int(vary.sum()), "transitions": len(data)}


def rollout_open_loop(model: WorldModel, obs0: np.ndarray, actions: np.ndarray, texts: Sequence[str],
                      context0: np.ndarray | None = None) -> np.ndarray:
    """Dreamed observations ``[N, H+1, O]`` from ``obs0[N,O]`` (and the previous actions ``context0``,
    zeros = at rest) under recorded ``actions[N,H,A]`` (ensemble mean)."""
    obs = torch.as_tensor(obs0, device=model.device)
    cond = _cond(model, model.instructions.lookup(texts))
    context = torch.zeros(len(obs0), model.context_dim, device=model.device) if context0 is None else \
        torch.as_tensor(context0, device=model.device)
    out = [obs]
    for t in range(actions.shape[1]):
        action = torch.as_tensor(actions[:, t], device=model.device)
        obs = model.predict(obs, action, cond, propagation="mean", context=context).next_obs
        context = next_context(context, action)
        out.append(obs)
    return torch.stack(out, 1).cpu().numpy()


def _stats(err_mm: np.ndarray) -> dict[str, float]:
    if err_mm.size == 0:
        return {"median": float("nan"), "p90": float("nan")}
    return {"median": float(np.median(err_mm)), "p90": float(np.percentile(err_mm, 90))}


def predicted_parts(layout: ObsLayout, parts: Mapping[str, slice]) -> dict[str, slice]:
    """The named parts (e.g. hand, object) that lie in the layout's predicted dims; the goal does not."""
    low, high = layout.dynamic
    return {name: part for name, part in parts.items() if low <= part.start and part.stop <= high}


def open_loop_errors(model: WorldModel, episodes: Sequence[Episode], horizons: Sequence[int],
                     parts: Mapping[str, slice], stride: int = 10) -> dict[str, Any]:
    """Position error in mm of each predicted part after ``H`` open-loop steps, for each ``H`` in
    ``horizons``."""
    report: dict[str, Any] = {}
    for horizon in horizons:
        starts = [(e, t0) for e in episodes for t0 in range(0, len(e) - horizon, stride)]
        if not starts:
            report[str(horizon)] = {"starts": 0}
            continue
        obs0 = np.stack([e.obs[t0] for e, t0 in starts])
        actions = np.stack([e.action[t0:t0 + horizon] for e, t0 in starts])
        history = model.context_dim // model.action_dim
        context0 = np.stack([action_context(e.action, history)[t0] for e, t0 in starts])
        real = np.stack([e.obs[t0 + horizon] for e, t0 in starts])
        dream = rollout_open_loop(model, obs0, actions, [e.meta["instruction"] for e, _ in starts], context0)[:, -1]
        entry: dict[str, Any] = {"starts": len(starts)}
        for name, part in predicted_parts(model.layout, parts).items():
            entry[f"{name}_mm"] = _stats(1000 * np.linalg.norm(dream[:, part] - real[:, part], axis=1))
            entry[f"{name}_copy_mm"] = _stats(1000 * np.linalg.norm(obs0[:, part] - real[:, part], axis=1))
        report[str(horizon)] = entry
    return report


def plot_episode(model: WorldModel, episode: Episode, path: str | Path, parts: Mapping[str, slice]) -> None:
    """Real vs dreamed (open loop from frame 0) x/y/z of each predicted part over one held-out episode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dream = rollout_open_loop(model, episode.obs[:1], episode.action[None, :-1], [episode.meta["instruction"]])[0]
    shown = predicted_parts(model.layout, parts)
    fig, axes = plt.subplots(max(len(shown), 1), 3, figsize=(12, 3 * max(len(shown), 1)), sharex=True, squeeze=False)
    for row, (name, part) in enumerate(shown.items()):
        for col, axis in enumerate("xyz"[:part.stop - part.start]):
            ax = axes[row, col]
            ax.plot(1000 * episode.obs[:, part][:, col], label="real", color="black")
            ax.plot(1000 * dream[:, part][:, col], label="dream (open loop)", color="tab:orange", ls="--")
            ax.set_title(f"{name} {axis} (mm)")
    axes[0, 0].legend()
    for ax in axes[-1]:
        ax.set_xlabel("step")
    fig.suptitle(f"{episode.meta.get('episode_id', '')}: {episode.meta.get('instruction', '')}")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def fidelity_report(model: WorldModel, held_out: Sequence[Episode], data: Transitions,
                    horizons: Sequence[int] = (10, 50, 100), *, parts: Mapping[str, slice]) -> dict[str, Any]:
    """One-step nMSE and open-loop part errors; ``parts``: the embodiment's named observation slices."""
    return {"episodes": len(held_out), "one_step": one_step_nmse(model, data),
            "open_loop": open_loop_errors(model, held_out, horizons, parts)}


def part_names(entry: Mapping[str, Any]) -> list[str]:
    """The parts one horizon's open-loop entry reports (``<part>_mm`` keys)."""
    return sorted(k[:-3] for k in entry if k.endswith("_mm") and not k.endswith("_copy_mm"))


def flat_metrics(report: dict[str, Any]) -> dict[str, float]:
    """``wm/*`` metric keys for MLflow from a fidelity report."""
    out = {"wm/one_step_nmse": report["one_step"]["nmse"], "wm/one_step_copy_nmse": report["one_step"]["copy_nmse"]}
    for horizon, entry in report["open_loop"].items():
        for name in part_names(entry):
            out[f"wm/h{horizon}_{name}_mm_median"] = entry[f"{name}_mm"]["median"]
            out[f"wm/h{horizon}_{name}_mm_p90"] = entry[f"{name}_mm"]["p90"]
    return out
