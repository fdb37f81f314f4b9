"""Reading an augmentation-ratio sweep (EVALUATION.md §2): success per cap, gain over real-only, a cap.

An arm is one (cap, training seed) pair evaluated on the same real-simulator layouts as every other
arm. Per cap, episodes are pooled over seeds and tasks: success with a Wilson 95% interval, plus the
per-seed rates so training-seed spread is visible. Gain = success(cap) − success(cap 0) with Newcombe's
hybrid score interval (from the two Wilson intervals). The recommended cap is the smallest cap whose
difference from the best cap's success is within noise (its interval contains 0); "beats real-only"
means the gain's interval lies above 0.

Control arms (``"control": true``) fill the same capped share of every batch with real frames drawn
again instead of dreams. Per cap, ``control`` pools them and ``content_gain`` = success(dreams) −
success(control) with its Newcombe interval: a gain is credited to the dreams' content only where that
interval lies above 0; otherwise it is a regularisation effect of the mix (more repetitions of real
frames), and the verdict says so.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from dreamgen.errors import ConfigError
from dreamgen.evaluate import pooled, wilson_interval


def newcombe_interval(s1: int, n1: int, s2: int, n2: int) -> tuple[float, float]:
    """95% interval of ``s1/n1 − s2/n2`` (Newcombe 1998, method 10: hybrid score from Wilson intervals)."""
    p1, p2 = s1 / n1, s2 / n2
    l1, u1 = wilson_interval(s1, n1)
    l2, u2 = wilson_interval(s2, n2)
    d = p1 - p2
    return d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)


def _pool(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return pooled(sum(int(r["successes"]) for r in rows), sum(int(r["episodes"]) for r in rows))


def analyse(arms: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per-cap and per-task success, gains over cap 0, the recommended cap and a plain verdict.

    Each arm: ``{"cap", "seed", "tasks": [{"task", "successes", "episodes"}, ...], "achieved_fraction"}``
    and optionally ``"control": true``.
    """
    controls = [a for a in arms if a.get("control")]
    arms = [a for a in arms if not a.get("control")]
    caps = sorted({float(a["cap"]) for a in arms})
    if 0.0 not in caps:
        raise ConfigError(f"a sweep needs the real-only arm (cap 0) to compare with; it has caps {caps}")
    tasks = [row["task"] for row in arms[0]["tasks"]]
    per_cap: dict[float, dict[str, Any]] = {}
    for cap in caps:
        mine = [a for a in arms if float(a["cap"]) == cap]
        rows = [row for a in mine for row in a["tasks"]]
        per_cap[cap] = {
            "cap": cap, **_pool(rows), "seeds": sorted(int(a["seed"]) for a in mine),
            "per_seed": {int(a["seed"]): _pool(a["tasks"])["success_rate"] for a in mine},
            "achieved_fraction": sum(a["achieved_fraction"] for a in mine) / len(mine),
            "tasks": {t: _pool([r for r in rows if r["task"] == t]) for t in tasks},
        }
    base = per_cap[0.0]
    for row in per_cap.values():
        row["gain"] = row["success_rate"] - base["success_rate"]
        row["gain_ci95"] = list(newcombe_interval(row["successes"], row["episodes"], base["successes"], base["episodes"]))
        for t in tasks:
            mine, theirs = row["tasks"][t], base["tasks"][t]
            mine["gain"] = mine["success_rate"] - theirs["success_rate"]
            mine["gain_ci95"] = list(newcombe_interval(mine["successes"], mine["episodes"],
                                                       theirs["successes"], theirs["episodes"]))
    content = _against_controls(per_cap, controls, tasks)
    best = max(caps, key=lambda c: (per_cap[c]["success_rate"], -c))
    b = per_cap[best]
    within = [c for c in caps
              if newcombe_interval(b["successes"], b["episodes"], per_cap[c]["successes"], per_cap[c]["episodes"])[0] <= 0]
    recommended = min(within)
    beats = [c for c in caps if c > 0 and per_cap[c]["gain_ci95"][0] > 0]
    if beats:
        verdict = (f"cap{'s' if len(beats) > 1 else ''} {', '.join(f'{c:g}' for c in beats)} beat{'' if len(beats) > 1 else 's'} "
                   f"real-only beyond noise (gain interval above 0); recommended cap {recommended:g} (the smallest "
                   f"within noise of the best, {best:g}{'' if recommended in beats else '; its own gain interval includes 0'})")
    elif recommended == 0.0:
        verdict = ("no cap beats real-only: every gain interval includes 0 or lies below it; "
                   "recommended cap 0 (train on real data only)")
    else:
        verdict = (f"no cap beats real-only beyond noise, and real-only is itself not within noise of the best "
                   f"cap {best:g}; recommended cap {recommended:g}")
    if controls:
        verdict += "; " + content
    return {"caps": caps, "tasks": tasks, "per_cap": {f"{c:g}": per_cap[c] for c in caps}, "best_cap": best,
            "recommended_cap": recommended, "beats_real_only": beats, "verdict": verdict,
            "seeds": sorted({int(a["seed"]) for a in arms}),
            "beats_control": [c for c in caps if per_cap[c].get("content_gain_ci95", [0.0])[0] > 0]}


def _against_controls(per_cap: dict[float, dict[str, Any]], controls: Sequence[dict[str, Any]],
                      tasks: Sequence[str]) -> str:
    """Add ``control`` and ``content_gain`` (dreams − control, Newcombe) to each cap that has control arms;
    return the verdict's sentence about them."""
    credited: list[float] = []
    regular: list[float] = []
    for cap, row in per_cap.items():
        mine = [a for a in controls if float(a["cap"]) == cap]
        if cap == 0.0 or not mine:
            continue
        rows = [r for a in mine for r in a["tasks"]]
        ctl = row["control"] = {**_pool(rows), "seeds": sorted(int(a["seed"]) for a in mine),
                                "achieved_fraction": sum(a["achieved_fraction"] for a in mine) / len(mine),
                                "tasks": {t: _pool([r for r in rows if r["task"] == t]) for t in tasks}}
        row["content_gain"] = row["success_rate"] - ctl["success_rate"]
        row["content_gain_ci95"] = list(newcombe_interval(row["successes"], row["episodes"], ctl["successes"],
                                                          ctl["episodes"]))
        for t in tasks:
            mine, theirs = row["tasks"][t], ctl["tasks"][t]
            mine["content_gain"] = mine["success_rate"] - theirs["success_rate"]
            mine["content_gain_ci95"] = list(newcombe_interval(mine["successes"], mine["episodes"],
                                                               theirs["successes"], theirs["episodes"]))
        (credited if row["content_gain_ci95"][0] > 0 else regular).append(cap)
    if not credited and not regular:
        return "no control arm ran"
    parts = []
    if credited:
        parts.append(f"dreams beat their control arm (the same share of re-drawn real frames) at cap "
                     f"{', '.join(f'{c:g}' for c in credited)}: a gain credited to the dreams' content")
    if regular:
        parts.append(f"at cap {', '.join(f'{c:g}' for c in regular)} the dreams do not beat their control arm "
                     f"(interval includes 0 or lies below): any gain there is the mix's regularisation, not "
                     f"the dreams' content")
    return "; ".join(parts)


def format_sweep(report: dict[str, Any]) -> str:
    """Success per cap (pooled over seeds and tasks) with intervals and gains, then success per task."""
    lines = [f"{'cap':>5s} {'achieved':>8s} {'success':>8s} {'95% CI':>13s} {'gain':>7s} {'gain 95% CI':>16s} "
             f"{'per seed':>20s} {'episodes':>8s}"]
    for key, row in report["per_cap"].items():
        seeds = " ".join(f"{v:.2f}" for _, v in sorted(row["per_seed"].items()))
        lines.append(f"{key:>5s} {row['achieved_fraction']:8.3f} {row['success_rate']:8.2f} "
                     f"[{row['ci95_low']:.2f}, {row['ci95_high']:.2f}] {row['gain']:+7.2f} "
                     f"[{row['gain_ci95'][0]:+.2f}, {row['gain_ci95'][1]:+.2f}] {seeds:>20s} {row['episodes']:8d}")
        ctl = row.get("control")
        if ctl is not None:
            lines.append(f"{'ctl ' + key:>5s} {ctl['achieved_fraction']:8.3f} {ctl['success_rate']:8.2f} "
                         f"[{ctl['ci95_low']:.2f}, {ctl['ci95_high']:.2f}] {row['content_gain']:+7.2f} "
                         f"[{row['content_gain_ci95'][0]:+.2f}, {row['content_gain_ci95'][1]:+.2f}] "
                         f"{'(dreams - control)':>20s} {ctl['episodes']:8d}")
    lines.append("")
    header = f"{'task':28s}" + "".join(f" {'cap ' + k:>19s}" for k in report["per_cap"])
    lines.append(header)
    for task in report["tasks"]:
        cells = [row["tasks"][task] for row in report["per_cap"].values()]
        lines.append(f"{task:28s}" + "".join(
            f" {c['success_rate']:5.2f} [{c['ci95_low']:.2f}, {c['ci95_high']:.2f}]" for c in cells))
    lines += ["", task_gains(report)]
    timed = [a["seconds"] for a in report.get("arms", []) if a.get("seconds")]
    if timed:  # arms written before arms were timed carry none
        train = [t["train"] for t in timed]
        lines.append("")
        lines.append(f"time per arm ({report.get('family', '?')}, {len(timed)} arms timed): training "
                     f"{sum(train) / len(train):.0f} s (min {min(train):.0f}, max {max(train):.0f}), evaluation "
                     f"{sum(t['evaluate'] for t in timed) / len(timed):.0f} s")
    lines.append("")
    lines.append(report["verdict"])
    return "\n".join(lines)


def task_gains(report: dict[str, Any], cap: str | None = None) -> str:
    """One sentence naming each task's gain at ``cap`` (default: the best cap) over real-only, and over the control
    arm where one ran, each with its Newcombe interval; "beyond noise" where the interval lies above 0."""
    cap = cap or f"{report['best_cap']:g}"
    if cap == "0":
        return "per-task gains: none to name, the best cap is real-only (cap 0)"
    row = report["per_cap"][cap]

    def gain(value: float, ci: list[float]) -> str:
        return f"{value:+.2f} [{ci[0]:+.2f}, {ci[1]:+.2f}]{' beyond noise' if ci[0] > 0 else ''}"

    parts = []
    for task in report["tasks"]:
        cell = row["tasks"][task]
        text = f"{task} {gain(cell['gain'], cell['gain_ci95'])}"
        if "content_gain" in cell:
            text += f" (over control {gain(cell['content_gain'], cell['content_gain_ci95'])})"
        parts.append(text)
    return f"per-task gain at cap {cap} over real-only: " + "; ".join(parts)


def equivalent_demos(curve: list[tuple[int, float]], success: float) -> float | None:
    """The demo count at which ``curve`` ([(demos, success)], demos increasing) reaches ``success``, linear between
    points in log(demos); None where the curve never does (beyond its last point). Below the first point: its
    demo count at most (the dreams are worth no more than the demos they came with)."""
    if success <= curve[0][1]:
        return float(curve[0][0])
    for (k0, s0), (k1, s1) in zip(curve, curve[1:], strict=False):
        if s0 < success <= s1:
            t = (success - s0) / (s1 - s0)
            return math.exp(math.log(k0) + t * (math.log(k1) - math.log(k0)))
    return None


def worth_sentence(demos: float | None, base: int, last: int) -> str:
    """The data-equivalence sentence for ``equivalent_demos``' answer, ``base`` demos per task + dreams."""
    if demos is None:
        return f"dreams were worth more than {last} demos per task (beyond the curve)"
    if demos <= base:
        return f"dreams were worth no more demos than the {base} per task they came with"
    return f"dreams were worth {demos:.1f} demos per task ({demos - base:.1f} more than the {base} they came with)"


def _cells(sweep: dict[str, Any], cap: str, arm: str) -> list[dict[str, Any]]:
    """One sweep's per-task cells (pooled over training seeds) of ``arm`` at ``cap``: the real-only arm (cap 0),
    the dreams, or their control arm."""
    if cap not in sweep["per_cap"]:
        raise ConfigError(f"a sweep has no arm at cap {cap} (caps {sweep['caps']})")
    row = sweep["per_cap"]["0" if arm == "real-only" else cap]
    if arm == "control":
        if "control" not in row:
            raise ConfigError(f"a sweep has no control arm at cap {cap}: run it with sweep.control=true")
        row = row["control"]
    return [row["tasks"][t] for t in sweep["tasks"]]


def pipeline_bootstrap(sweeps: Sequence[dict[str, Any]], cap: str, against: str = "real-only", draws: int = 10000,
                       seed: int = 0) -> dict[str, Any]:
    """The dreams' gain at ``cap`` over ``against`` (``real-only`` or ``control``) pooled over independent pipelines
    (each its own collection, world model, generation and audit split: one sweep each, same tasks and evaluation).

    The point estimate is the mean of the pipelines' gains (each pipeline weighs the same). Its 95% interval is a
    two-level percentile bootstrap: the pipelines drawn with replacement, then, within each drawn pipeline, each
    (arm, task) cell's episodes drawn with replacement (a binomial at the cell's rate) — so it holds the spread
    between pipelines as well as the evaluation's. Overall (episodes pooled over tasks) and per task."""
    import numpy as np

    if against not in ("real-only", "control"):
        raise ConfigError(f"against={against!r}; accepted: real-only, control")
    if not sweeps:
        raise ConfigError("no pipeline's sweep to pool")
    tasks = list(sweeps[0]["tasks"])
    for s in sweeps:
        if list(s["tasks"]) != tasks:
            raise ConfigError(f"the pipelines' sweeps evaluate other tasks ({list(s['tasks'])} against {tasks}): "
                              "pooled gains need the same tasks")

    def arrays(arm: str) -> tuple[Any, Any]:
        cells = [_cells(s, cap, arm) for s in sweeps]
        return (np.array([[c["successes"] for c in row] for row in cells], dtype=np.int64),
                np.array([[c["episodes"] for c in row] for row in cells], dtype=np.int64))

    (s1, n1), (s0, n0) = arrays("dreams"), arrays(against)
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(sweeps), size=(draws, len(sweeps)))
    m1, m0 = n1[pick], n0[pick]  # (draws, pipelines, tasks): the drawn pipelines' episodes per cell
    b1 = rng.binomial(m1, s1[pick] / m1)  # their successes, drawn again
    b0 = rng.binomial(m0, s0[pick] / m0)

    def summary(gains: Any, drawn: Any) -> dict[str, Any]:
        low, high = np.percentile(drawn.mean(axis=1), [2.5, 97.5])
        return {"gain": float(gains.mean()), "ci95": [float(low), float(high)],
                "per_pipeline": [float(g) for g in gains]}

    out = {"cap": cap, "against": against, "pipelines": len(sweeps), "draws": draws,
           "overall": summary(s1.sum(1) / n1.sum(1) - s0.sum(1) / n0.sum(1),
                              b1.sum(2) / m1.sum(2) - b0.sum(2) / m0.sum(2)),
           "tasks": {t: summary(s1[:, i] / n1[:, i] - s0[:, i] / n0[:, i],
                                b1[:, :, i] / m1[:, :, i] - b0[:, :, i] / m0[:, :, i])
                     for i, t in enumerate(tasks)}}
    return out
