"""The safety head: will this action lead somewhere unsafe within the next ``k`` steps?

A small ensemble of classifiers beside the dynamics, on the same inputs (the normalised state, the last
step's velocity, the action and the previous actions): for every safety event the store labels
(``dreamgen.safety``) and for ``any``, the probability that it happens in frames ``t .. t+k-1`` after
action ``t`` is taken (a frame's label is the state after its action). The heads it adds to every
``Prediction`` (by name, as every head):

    risk            P(any event within k steps), the members' mean, calibrated
    risk_upper      the most worried member's P(any): pessimistic where the members disagree
    risk_<event>    P(that event within k steps), calibrated
    risk_unsure     1 where the members disagree more than on 99% of held-out real frames, or the dynamics
                    do (disagreement above the halting bound): out of distribution, never read as safe

Trained on the real episodes' labels (every kind, the risky ones included), with positives up-weighted
(events are rare); each output is Platt-scaled on the validation episodes and gets the threshold that
maximises balanced accuracy there (``thresholds``). ``audit`` scores it on held-out episodes: AUROC,
balanced accuracy, the true-positive rate at 5% false positives and the lead time before each real event.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from dreamgen.scores import auc
from dreamgen.types import Episode
from dreamgen.world_model.base import action_context

ANY = "any"


@dataclasses.dataclass(frozen=True)
class RiskConfig:
    """Settings of the safety head (``world_model.safety_head``; defaults in ``configs/config.yaml``)."""

    horizon: int = 10  # k: an event within this many steps after the action counts
    members: int = 5
    hidden: int = 64
    layers: int = 2
    epochs: int = 30
    batch_size: int = 512
    lr: float = 1e-3
    max_pos_weight: float = 20.0  # positives weigh neg/pos in the loss, at most this much
    unsure_quantile: float = 0.99  # members' spread on real validation frames above this quantile: unsure

    def __post_init__(self) -> None:
        for name in ("horizon", "members", "hidden", "layers", "epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} must be an integer >= 1")
        if not self.lr > 0 or not self.max_pos_weight >= 1 or not 0 < self.unsure_quantile <= 1:
            raise ValueError(f"lr={self.lr}, max_pos_weight={self.max_pos_weight}, unsure_quantile="
                             f"{self.unsure_quantile}: need lr > 0, max_pos_weight >= 1, 0 < unsure_quantile <= 1")


def head_names(events: Sequence[str]) -> tuple[str, ...]:
    return ("risk", "risk_upper", *(f"risk_{e}" for e in events), "risk_unsure")


def within(unsafe: np.ndarray, horizon: int) -> np.ndarray:
    """``unsafe[T, E]`` (per frame) -> ``bool[T, E + 1]``: the event (last column: any) happens in frames
    ``t .. t + horizon - 1``."""
    unsafe = np.asarray(unsafe, bool)
    rows = np.concatenate([unsafe, unsafe.any(1, keepdims=True)], 1).astype(np.int64)
    total = np.concatenate([np.zeros((1, rows.shape[1]), np.int64), np.cumsum(rows, 0)])
    t = np.arange(len(rows))
    return (total[np.minimum(t + horizon, len(rows))] - total[t]) > 0


@dataclasses.dataclass
class RiskData:
    """Every frame of some labelled episodes: inputs and the within-``k`` labels ``y[N, E + 1]``;
    ``episode[N]`` and ``frame[N]`` say where each row came from."""

    obs: np.ndarray
    action: np.ndarray
    context: np.ndarray
    y: np.ndarray
    unsafe: np.ndarray  # [N, E] the frame's own labels (for lead times)
    episode: np.ndarray
    frame: np.ndarray

    def __len__(self) -> int:
        return len(self.obs)


def risk_data(episodes: Sequence[Episode], action_history: int, horizon: int) -> RiskData:
    parts: dict[str, list[np.ndarray]] = {f.name: [] for f in dataclasses.fields(RiskData)}
    for i, episode in enumerate(episodes):
        if episode.unsafe is None:
            raise ValueError(f"episode {episode.meta.get('episode_id', i)} carries no safety labels")
        parts["obs"].append(episode.obs)
        parts["action"].append(episode.action)
        parts["context"].append(action_context(episode.action, action_history))
        parts["y"].append(within(episode.unsafe, horizon))
        parts["unsafe"].append(np.asarray(episode.unsafe, bool))
        parts["episode"].append(np.full(len(episode), i))
        parts["frame"].append(np.arange(len(episode)))
    return RiskData(**{k: np.concatenate(v) for k, v in parts.items()})


class RiskHead(nn.Module):
    """The classifiers (``members`` MLPs in one fused ensemble) with their calibration and thresholds."""

    scale: torch.Tensor
    shift: torch.Tensor
    thresholds: torch.Tensor
    unsure_bound: torch.Tensor

    def __init__(self, events: Sequence[str], config: RiskConfig, in_dim: int):
        super().__init__()
        from dreamgen.world_model.ensemble import EnsembleMLP

        self.events, self.config = tuple(events), config
        width = len(self.events) + 1
        self.net = EnsembleMLP(config.members, in_dim, 1, config.hidden, config.layers, width, "silu", 0)
        self.register_buffer("scale", torch.ones(width))  # Platt: sigmoid(scale x logit + shift)
        self.register_buffer("shift", torch.zeros(width))
        self.register_buffer("thresholds", torch.full((width,), 0.5))
        self.register_buffer("unsure_bound", torch.tensor(float("inf")))
        self.report: dict[str, Any] = {}

    @property
    def heads(self) -> tuple[str, ...]:
        return head_names(self.events)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """``x[B, I]`` (shared by every member) or ``[K, B, I]`` -> uncalibrated logits ``[K, B, E + 1]``."""
        rows = x.shape[-2]
        bias = self.net.biases[0].expand(self.config.members, rows, -1)
        return self.net(x, bias)

    def probs(self, x: torch.Tensor) -> torch.Tensor:
        """Calibrated per-member probabilities ``[K, B, E + 1]``."""
        return torch.sigmoid(self.logits(x) * self.scale + self.shift)

    def predict_heads(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        p = self.probs(x)
        spread = p[..., -1].std(0) if p.shape[0] > 1 else torch.zeros_like(p[0, :, -1])
        heads = {"risk": p[..., -1].mean(0), "risk_upper": p[..., -1].amax(0)}
        heads.update({f"risk_{e}": p[..., i].mean(0) for i, e in enumerate(self.events)})
        heads["risk_unsure"] = (spread > self.unsure_bound).float()
        return heads

    def meta(self) -> dict[str, Any]:
        return {"events": list(self.events), "config": dataclasses.asdict(self.config), "report": self.report}


def _inputs(model: Any, data: RiskData) -> torch.Tensor:
    as_t = lambda a: torch.as_tensor(np.asarray(a, np.float32), device=model.device)  # noqa: E731
    with torch.no_grad():
        return model.inputs(as_t(data.obs), as_t(data.action), as_t(data.context))


def _platt(logits: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """``scale, shift`` minimising the BCE of the members' mean calibrated probability (``logits[K, N]``)."""
    params = torch.tensor([1.0, 0.0], requires_grad=True)
    optim = torch.optim.LBFGS([params], lr=0.5, max_iter=100)

    def closure() -> torch.Tensor:
        optim.zero_grad()
        p = torch.sigmoid(logits * params[0] + params[1]).mean(0).clamp(1e-6, 1 - 1e-6)
        loss = nn.functional.binary_cross_entropy(p, y)
        loss.backward()
        return loss

    optim.step(closure)
    scale, shift = (float(v) for v in params.detach())
    return (scale, shift) if np.isfinite([scale, shift]).all() and scale > 0 else (1.0, 0.0)


def best_threshold(prob: np.ndarray, y: np.ndarray) -> float:
    """The probability threshold with the highest balanced accuracy on ``(prob, y)`` (0.5 without both classes)."""
    if y.all() or not y.any():
        return 0.5
    candidates = np.unique(np.quantile(prob, np.linspace(0.0, 1.0, 201)))
    scores = [balanced_accuracy(prob >= c, y) for c in candidates]
    return float(candidates[int(np.argmax(scores))])


def fit_risk(model: Any, train: Sequence[Episode], val: Sequence[Episode], events: Sequence[str],
             config: RiskConfig, *, seed: int) -> RiskHead:
    """Train the safety head on ``train``'s labels, keep each member's best epoch on ``val``, calibrate it
    there and set its thresholds; attaches it to ``model`` (an ensemble) and returns it."""
    history = model.context_dim // model.action_dim
    data_t, data_v = (risk_data(part, history, config.horizon) for part in (train, val))
    x_t, x_v = _inputs(model, data_t), _inputs(model, data_v)
    y_t, y_v = (torch.as_tensor(d.y, dtype=torch.float32) for d in (data_t, data_v))
    pos = y_t.sum(0)
    pos_weight = torch.where(pos > 0, ((len(y_t) - pos) / pos.clamp(min=1)).clamp(1.0, config.max_pos_weight),
                             torch.ones_like(pos))
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    head = RiskHead(events, config, x_t.shape[1]).to(model.device)
    optim = torch.optim.AdamW(head.net.parameters(), lr=config.lr, weight_decay=1e-5)
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=pos_weight, reduction="none")
    k, n = config.members, len(x_t)
    best = torch.full((k,), float("inf"))
    snapshot = {name: p.detach().clone() for name, p in head.net.state_dict().items()}
    steps = max(1, n // config.batch_size)
    for _ in range(config.epochs):
        head.net.train()
        for _ in range(steps):
            index = torch.randint(n, (k, config.batch_size), generator=generator)
            loss = loss_fn(head.logits(x_t[index]), y_t[index]).mean((1, 2))
            optim.zero_grad(set_to_none=True)
            loss.sum().backward()
            optim.step()
        head.net.eval()
        with torch.no_grad():
            val_loss = loss_fn(head.logits(x_v), y_v.expand(k, -1, -1)).mean((1, 2))
        improved = val_loss < best
        if improved.any():
            for name, value in head.net.state_dict().items():
                if value.shape[0] == k:
                    snapshot[name][improved] = value.detach()[improved]
            best = torch.where(improved, val_loss, best)
    head.net.load_state_dict(snapshot)
    head.net.eval()
    with torch.no_grad():
        logits = head.logits(x_v)
    calibrated = []
    for j in range(y_v.shape[1]):
        if 0 < y_v[:, j].sum() < len(y_v):
            scale, shift = _platt(logits[..., j].detach(), y_v[:, j])
            head.scale[j], head.shift[j] = scale, shift
            calibrated.append(([*events, ANY])[j])
    with torch.no_grad():
        p = head.probs(x_v)
    mean = p.mean(0).numpy()
    for j in range(y_v.shape[1]):
        head.thresholds[j] = best_threshold(mean[:, j], data_v.y[:, j])
    spread = p[..., -1].std(0) if k > 1 else torch.zeros(len(x_v))
    head.unsure_bound.fill_(float(torch.quantile(spread, config.unsure_quantile)))
    head.report = {"train_frames": int(n), "val_frames": len(x_v),
                   "train_positives": {e: int(v) for e, v in zip([*events, ANY], pos.tolist(), strict=True)},
                   "val_positives": {e: int(v) for e, v in zip([*events, ANY], y_v.sum(0).tolist(), strict=True)},
                   "calibrated": calibrated, "thresholds": dict(zip([*events, ANY], head.thresholds.tolist(), strict=True))}
    model.attach_risk(head)
    return head


# ---------------------------------------------------------------------- scoring against reality
def balanced_accuracy(predicted: np.ndarray, y: np.ndarray) -> float:
    """Mean of the true-positive and true-negative rates; NaN without both classes."""
    predicted, y = np.asarray(predicted, bool), np.asarray(y, bool)
    if y.all() or not y.any():
        return float("nan")
    return float((predicted[y].mean() + (~predicted[~y]).mean()) / 2)


def tpr_at_fpr(score: np.ndarray, y: np.ndarray, fpr: float = 0.05) -> float:
    """The share of positives scored above the threshold that passes ``fpr`` of the negatives."""
    y = np.asarray(y, bool)
    if y.all() or not y.any():
        return float("nan")
    threshold = np.quantile(score[~y], 1 - fpr)
    return float((score[y] > threshold).mean())


def lead_times(warn: np.ndarray, unsafe: np.ndarray, episode: np.ndarray, horizon: int) -> list[int]:
    """Steps of warning before each real event's onset (a frame raising it after one that did not): how many
    actions up to and including the onset's were taken under an unbroken warning (0: not warned in time;
    at most ``horizon``). ``warn[N]``, ``unsafe[N]`` bool over frames, in episode order."""
    leads = []
    for e in np.unique(episode):
        rows = np.flatnonzero(episode == e)
        w, u = warn[rows], unsafe[rows]
        for onset in np.flatnonzero(u & ~np.concatenate([[False], u[:-1]])):
            lead = 0
            while lead < horizon and onset - lead >= 0 and w[onset - lead]:
                lead += 1
            leads.append(lead)
    return leads


def audit(model: Any, episodes: Sequence[Episode], *, by_task: bool = True) -> dict[str, Any]:
    """The safety head against the real labels of ``episodes`` (held out: never trained or calibrated on),
    each real frame's inputs fed as recorded. Per event and ``any``: AUROC, balanced accuracy at the
    head's threshold (unsure frames counted as warnings), the same for the head alone, TPR at 5% FPR,
    lead times, calibration; ``any`` per task too."""
    from dreamgen.world_model.metrics import calibration

    head: RiskHead = model.risk
    config = head.config
    data = risk_data(episodes, model.context_dim // model.action_dim, config.horizon)
    tasks = np.array([episodes[i].meta["task"] for i in data.episode])
    table = model.instructions
    as_t = lambda a: torch.as_tensor(np.asarray(a, np.float32), device=model.device)  # noqa: E731
    cond = as_t(table.embeddings[table.lookup([episodes[i].meta["instruction"] for i in data.episode])])
    with torch.no_grad():  # one prediction: the safety heads, unsure where the dynamics disagree too
        pred = model.predict(as_t(data.obs), as_t(data.action), model.condition(cond), propagation="mean",
                             context=as_t(data.context))
    heads = {name: pred.head(name).cpu().numpy() for name in head.heads}
    unsure = heads["risk_unsure"] > 0
    names = [*head.events, ANY]
    out: dict[str, Any] = {"horizon": config.horizon, "frames": len(data), "episodes": len(episodes),
                           "unsure_share": float(unsure.mean()), "events": {}}

    def score(rows: np.ndarray, j: int) -> dict[str, Any]:
        name = names[j]
        prob = heads["risk" if name == ANY else f"risk_{name}"][rows]
        y = data.y[rows, j]
        thr = float(head.thresholds[j])
        warn = (prob >= thr) | unsure[rows]
        frame_events = data.unsafe[rows].any(1) if name == ANY else data.unsafe[rows, j]
        leads = lead_times(warn, frame_events, data.episode[rows], config.horizon)
        cal = calibration(prob, y)
        return {"frames": int(len(rows)), "positives": int(y.sum()), "auroc": auc(prob, y),
                "balanced_accuracy": balanced_accuracy(warn, y),
                "balanced_accuracy_head": balanced_accuracy(prob >= thr, y), "threshold": thr,
                "tpr_at_5fpr": tpr_at_fpr(prob, y), "onsets": len(leads),
                "lead_median": float(np.median(leads)) if leads else float("nan"),
                "warned_5_steps": float(np.mean(np.asarray(leads) >= 5)) if leads else float("nan"),
                "ece": cal["ece"], "bins": cal["bins"]}

    every = np.arange(len(data))
    for j, name in enumerate(names):
        out["events"][name] = score(every, j)
    if by_task:
        out["tasks"] = {task: score(np.flatnonzero(tasks == task), len(names) - 1) for task in sorted(set(tasks))}
    return out


@torch.no_grad()
def check(model: Any, obs: np.ndarray, actions: np.ndarray, instruction: str) -> dict[str, np.ndarray]:
    """"Will this go somewhere unsafe?": the action sequence ``actions[T, A]`` from the real state ``obs[O]``
    for ``instruction`` (a text of the model's table), rolled out in the model (the ensemble mean). Returns
    each safety head per step (``risk``, ``risk_<event>``, ``risk_upper``, ``risk_unsure``: ``[T]``) and the
    dreamed states ``obs[T, O]`` after each action."""
    from dreamgen.world_model.base import require_heads

    require_heads(model, ("risk",), "check")
    dev = model.device
    embedding = model.instructions.embeddings[model.instructions.lookup([instruction])]
    state = model.initial_state(torch.as_tensor(np.asarray(obs, np.float32)[None], device=dev),
                                torch.as_tensor(embedding, device=dev))
    out: dict[str, list[np.ndarray]] = {name: [] for name in (*model.risk.heads, "obs")}
    for action in np.asarray(actions, np.float32):
        state, pred = model.step(state, torch.as_tensor(action[None], device=dev), propagation="mean")
        for name in model.risk.heads:
            out[name].append(pred.head(name).cpu().numpy()[0])
        out["obs"].append(pred.next_obs.cpu().numpy()[0])
    return {name: np.asarray(values) for name, values in out.items()}


def predicted_events(model: Any, pred: Any) -> list[str]:
    """The events whose predicted risk reaches the head's threshold on some step of ``pred`` (a ``Prediction``
    over a recorded episode's ``T`` transitions, from ``episode_prediction``: what the filter rejects on and the
    audit scores)."""
    head: RiskHead = model.risk
    return [e for i, e in enumerate(head.events)
            if (pred.head(f"risk_{e}").cpu().numpy() >= float(head.thresholds[i])).any()]
