"""World-model fidelity on held-out real episodes (EVALUATION.md §3).

- one-step nMSE of the dynamic dims (MSE / per-dim variance of the real next state, over dims that
  vary), next to the copy baseline ``s' = s``;
- open-loop error: from ``t0`` in a held-out episode, feed the recorded actions for ``H`` steps and
  measure the position error of each named part of the observation (the embodiment's ``parts`` that the
  model predicts, e.g. hand and object) in millimetres (observations in metres; median and p90), next to
  the copy baseline (nothing moves);
- a latent model (cameras): open loop from the real start frame, the PSNR of the decoded frame against the
  real camera frame (copy baseline: the start frame) beside the part errors of the state it reads from
  the latent (its state head, trained with the model: a probe of what the latent holds);
- calibration of each success head (``success``; ``success_lower``, the least confident member) on
  held-out real transitions: ECE, precision and recall at 0.5, Brier score, a reliability diagram;
- physics, for both kinds: object permanence (where the real object stayed put over the horizon, how far
  the dream moved it) and contact (where the real object was pushed or carried, how often the dream moved
  it at least half as far).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dreamgen.types import Episode
from dreamgen.world_model.base import ObsLayout, WorldModel, action_context
from dreamgen.world_model.fit import Transitions


def _cond(model: WorldModel, rows: np.ndarray) -> torch.Tensor:
    """The model's conditioning for instruction-table ``rows``."""
    return model.condition(torch.as_tensor(model.instructions.embeddings[rows], device=model.device))


def calibration(prob: np.ndarray, outcome: np.ndarray, *, bins: int = 10, threshold: float = 0.5) -> dict[str, Any]:
    """How far predicted probabilities ``prob[N]`` are from the frequencies of ``outcome[N]`` (bool).

    ``ece``: expected calibration error, sum over ``bins`` equal-width bins of (share of predictions in the
    bin) x |mean prediction - frequency of outcome| (0 for a calibrated predictor; Guo et al. 2017);
    ``precision``: the real outcome's frequency where ``prob >= threshold`` (NaN when nothing is
    predicted); ``recall``; ``brier``: mean squared error; ``bins``: what a reliability diagram draws."""
    prob, outcome = np.asarray(prob, np.float64), np.asarray(outcome, bool)
    if prob.shape != outcome.shape or prob.ndim != 1:
        raise ValueError(f"prob {prob.shape} and outcome {outcome.shape} must be the same 1-d shape")
    which = np.minimum((prob * bins).astype(int), bins - 1)
    table, ece = [], 0.0
    for b in range(bins):
        mine = which == b
        if mine.any():
            confidence, frequency = float(prob[mine].mean()), float(outcome[mine].mean())
            ece += mine.mean() * abs(confidence - frequency)
            table.append({"low": b / bins, "high": (b + 1) / bins, "count": int(mine.sum()),
                          "confidence": confidence, "frequency": frequency})
    predicted = prob >= threshold
    return {"ece": float(ece) if len(prob) else float("nan"), "brier": float(((prob - outcome) ** 2).mean()),
            "precision": float(outcome[predicted].mean()) if predicted.any() else float("nan"),
            "recall": float(predicted[outcome].mean()) if outcome.any() else float("nan"),
            "predicted": int(predicted.sum()), "positives": int(outcome.sum()), "n": len(prob), "bins": table}


def head_calibration(model: WorldModel, data: Transitions) -> dict[str, Any]:
    """Calibration of each success head (``success``, ``success_lower``, ...) on held-out real transitions
    against their recorded success labels (ensemble mean over members' inputs, real context)."""
    pred = model.predict(torch.as_tensor(data.obs, device=model.device),
                         torch.as_tensor(data.action, device=model.device), _cond(model, data.instruction),
                         propagation="mean", context=torch.as_tensor(data.context, device=model.device))
    outcome = np.asarray(data.success) >= 0.5
    return {name: calibration(pred.head(name).cpu().numpy(), outcome)
            for name in model.heads if name.startswith("success")}


def success_at_dream_ends(model: WorldModel, dreams: Sequence[Episode]) -> dict[str, Any]:
    """Each success head on the step that ended each of ``dreams`` (its last transition, the dream's own context):
    the mean probability and the share at or above 0.5 — on dreams an audit refuted, how often the head would
    still call that end a success."""
    from dreamgen.world_model.fit import transitions

    dreams = [d for d in dreams if len(d) > 1]
    if not dreams:
        return {}
    rows = transitions(dreams, model.layout, model.instructions, int(model.context_dim // max(model.action_dim, 1)))
    last = np.cumsum([len(d) - 1 for d in dreams]) - 1
    pred = model.predict(torch.as_tensor(rows.obs[last], device=model.device),
                         torch.as_tensor(rows.action[last], device=model.device), _cond(model, rows.instruction[last]),
                         propagation="mean", context=torch.as_tensor(rows.context[last], device=model.device))
    out = {}
    for name in (h for h in model.heads if h.startswith("success")):
        prob = pred.head(name).cpu().numpy()
        out[name] = {"mean": float(prob.mean()), "fires": float((prob >= 0.5).mean()), "dreams": len(prob)}
    return out


def plot_reliability(report: Mapping[str, Any], path: str | Path, *, what: str = "success") -> None:
    """A reliability diagram (predicted probability against observed frequency) of each head in ``report``
    (``head_calibration``'s output: name -> ``ece``, ``bins``, optionally ``precision``), with the ECE in the
    legend; ``what`` the heads predict (``success``, or a safety event within k steps)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], color="0.6", linestyle="--", label="calibrated")
    for name, entry in report.items():
        rows = entry["bins"]
        precision = f", precision {entry['precision']:.2f}" if "precision" in entry else ""
        ax.plot([r["confidence"] for r in rows], [r["frequency"] for r in rows], marker="o",
                label=f"{name}: ECE {entry['ece']:.3f}{precision}")
    ax.set(xlabel=f"predicted {what} probability", ylabel=f"real {what} frequency", xlim=(0, 1), ylim=(0, 1),
           title=f"{what} heads on held-out real transitions")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


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
                      context0: np.ndarray | None = None, *, images0: np.ndarray | None = None,
                      frames: list[np.ndarray] | None = None) -> np.ndarray:
    """Dreamed observations ``[N, H+1, O]`` from ``obs0[N,O]`` (seen as ``images0``, for a latent model; and
    the previous actions ``context0``, zeros = at rest) under recorded ``actions[N,H,A]`` (ensemble mean).
    With ``frames``, a latent model's decoded images of the last step are appended to it."""
    embeddings = torch.as_tensor(model.instructions.embeddings[model.instructions.lookup(texts)], device=model.device)
    state = model.initial_state(torch.as_tensor(obs0, device=model.device), embeddings, images=images0)
    if context0 is not None and context0.shape[1]:  # the actions before the start, executed oldest first
        earlier = torch.as_tensor(context0, device=model.device).reshape(len(obs0), -1, model.action_dim)
        for j in reversed(range(earlier.shape[1])):
            state = model.executed(state, earlier[:, j])
    out = [state.obs]
    for t in range(actions.shape[1]):
        state, _ = model.step(state, torch.as_tensor(actions[:, t], device=model.device), propagation="mean")
        out.append(state.obs)
    drawn = model.render(state) if frames is not None else None
    if frames is not None and drawn is not None:
        frames.append(drawn)
    return torch.stack(out, 1).cpu().numpy()


def psnr(dream: np.ndarray, real: np.ndarray) -> np.ndarray:
    """Peak signal-to-noise ratio (dB) of each uint8 frame stack ``[N, ...]`` against the real one."""
    mse = ((dream.astype(np.float64) - real.astype(np.float64)) ** 2).reshape(len(real), -1).mean(1)
    return 10 * np.log10(255.0 ** 2 / np.maximum(mse, 1e-10))


def _stats(err_mm: np.ndarray) -> dict[str, float]:
    if err_mm.size == 0:
        return {"median": float("nan"), "p90": float("nan")}
    return {"median": float(np.median(err_mm)), "p90": float(np.percentile(err_mm, 90))}


def physics_checks(start: np.ndarray, dream: np.ndarray, real: np.ndarray, still_mm: float = 2.0,
                   moved_mm: float = 20.0) -> dict[str, Any]:
    """Object permanence and contact over one horizon, from the object's start, dreamed and real positions
    ``[N, 3]``: where the real object stayed within ``still_mm`` (nothing touched it), how far the dream moved
    it (``object_still_drift``, mm); where the real object moved more than ``moved_mm`` (something pushed or carried it),
    the share of starts where the dream moved it at least half as far."""
    real_move = 1000 * np.linalg.norm(real - start, axis=1)
    dream_move = 1000 * np.linalg.norm(dream - start, axis=1)
    still, moved = real_move < still_mm, real_move > moved_mm
    return {"object_still_starts": int(still.sum()), "object_still_drift": _stats(dream_move[still]),
            "object_moved_starts": int(moved.sum()),
            "object_moved_followed": float(np.mean(dream_move[moved] >= 0.5 * real_move[moved])) if moved.any()
            else float("nan")}


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
        images0 = np.stack([e.images[t0] for e, t0 in starts]) if model.cameras is not None else None  # type: ignore[index]
        frames: list[np.ndarray] | None = [] if model.cameras is not None else None
        dream = rollout_open_loop(model, obs0, actions, [e.meta["instruction"] for e, _ in starts], context0,
                                  images0=images0, frames=frames)[:, -1]
        entry: dict[str, Any] = {"starts": len(starts)}
        if frames:  # image error of the decoded frame against the real camera frame, and copying the start frame
            real_images = np.stack([e.images[t0 + horizon] for e, t0 in starts])  # type: ignore[index]
            entry["psnr_db"] = _stats(psnr(frames[0], real_images))
            entry["psnr_copy_db"] = _stats(psnr(images0, real_images))  # type: ignore[arg-type]
        for name, part in predicted_parts(model.layout, parts).items():
            entry[f"{name}_mm"] = _stats(1000 * np.linalg.norm(dream[:, part] - real[:, part], axis=1))
            entry[f"{name}_copy_mm"] = _stats(1000 * np.linalg.norm(obs0[:, part] - real[:, part], axis=1))
        if "object" in predicted_parts(model.layout, parts):
            entry.update(physics_checks(obs0[:, parts["object"]], dream[:, parts["object"]], real[:, parts["object"]]))
        report[str(horizon)] = entry
    return report


def plot_episode(model: WorldModel, episode: Episode, path: str | Path, parts: Mapping[str, slice]) -> None:
    """Real vs dreamed (open loop from frame 0) x/y/z of each predicted part over one held-out episode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dream = rollout_open_loop(model, episode.obs[:1], episode.action[None, :-1], [episode.meta["instruction"]],
                              images0=None if episode.images is None else episode.images[:1])[0]
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


def open_loop_strip(model: WorldModel, episode: Episode, path: str | Path, frames: int = 8) -> None:
    """A latent model's decoded frames, open loop from the episode's first frame under its actions, above
    the real camera frames (``dreamgen.strips``): one rollout, decoded at the shown steps."""
    from dreamgen.strips import save_strip

    assert episode.images is not None
    steps = np.unique(np.linspace(0, len(episode) - 1, frames).round().astype(int))
    embeddings = torch.as_tensor(model.instructions.embeddings[model.instructions.lookup([episode.meta["instruction"]])],
                                 device=model.device)
    state = model.initial_state(torch.as_tensor(episode.obs[:1], device=model.device), embeddings,
                                images=episode.images[:1])
    decoded = []
    for t in range(int(steps[-1]) + 1):
        if t in steps:
            drawn = model.render(state)
            if drawn is None:
                raise ValueError(f"an open-loop strip needs a model that draws frames; kind {model.kind} draws none")
            decoded.append(drawn[0])
        state, _ = model.step(state, torch.as_tensor(episode.action[t:t + 1], device=model.device), propagation="mean")
    save_strip(np.stack(decoded), episode.images[steps], path, frames=len(steps))


def fidelity_report(model: WorldModel, held_out: Sequence[Episode], data: Transitions,
                    horizons: Sequence[int] = (10, 50, 100), *, parts: Mapping[str, slice]) -> dict[str, Any]:
    """One-step nMSE (a state model; a latent model reports H = 1 open loop instead) and open-loop part
    errors (a latent model: and PSNR); ``parts``: the embodiment's named observation slices."""
    state = model.cameras is None  # a latent model's transitions are latents: its state is read, not stepped
    return {"episodes": len(held_out), "one_step": one_step_nmse(model, data) if state else None,
            "calibration": head_calibration(model, data) if state else {},
            "open_loop": open_loop_errors(model, held_out, horizons, parts)}


def part_names(entry: Mapping[str, Any]) -> list[str]:
    """The parts one horizon's open-loop entry reports (``<part>_mm`` keys)."""
    return sorted(k[:-3] for k in entry if k.endswith("_mm") and not k.endswith("_copy_mm"))


def flat_metrics(report: dict[str, Any]) -> dict[str, float]:
    """``wm/*`` metric keys for MLflow from a fidelity report."""
    out = {"wm/one_step_nmse": report["one_step"]["nmse"], "wm/one_step_copy_nmse": report["one_step"]["copy_nmse"]} \
        if report["one_step"] else {}
    for head, entry in report.get("calibration", {}).items():
        out[f"wm/{head}_ece"], out[f"wm/{head}_precision"] = entry["ece"], entry["precision"]
    for horizon, entry in report["open_loop"].items():
        if "psnr_db" in entry:
            out[f"wm/h{horizon}_psnr_db_median"] = entry["psnr_db"]["median"]
        if entry.get("object_still_starts"):
            out[f"wm/h{horizon}_object_still_drift_mm_median"] = entry["object_still_drift"]["median"]
        if entry.get("object_moved_starts"):
            out[f"wm/h{horizon}_object_moved_followed"] = entry["object_moved_followed"]
        for name in part_names(entry):
            out[f"wm/h{horizon}_{name}_mm_median"] = entry[f"{name}_mm"]["median"]
            out[f"wm/h{horizon}_{name}_mm_p90"] = entry[f"{name}_mm"]["p90"]
    return out
