"""The quality filter and the audit: planted bad dreams, determinism, the real simulator as judge."""

from __future__ import annotations

import contextlib
import json
import shutil

import numpy as np
import pytest

from dreamgen.data.store import TrajectoryStore
from dreamgen.quality.audit import assign_folds, rates
from dreamgen.quality.filter import PASSED, FilterConfig, Support, physical_reason, pick_threshold, verdicts
from dreamgen.quality.model import QualityConfig, QualityData, QualityModel, auc, calibration, fit_quality
from dreamgen.types import Episode
from tests.conftest import dreamgen, in_process

DYNAMIC = slice(0, 18)


def smooth_episode(rng, length=30, offset=0.0) -> Episode:
    """A real-looking episode: slow random-walk states in a box, actions inside [-1, 1]."""
    obs = np.cumsum(rng.normal(0, 0.01, (length, 39)), axis=0).astype(np.float32) + offset
    obs[:, 4:7] = np.linspace(0, rng.uniform(0.5, 1), length)[:, None]  # the object slides over a wide range
    return Episode(obs=obs, action=rng.uniform(-1, 1, (length, 4)).astype(np.float32),
                   reward=np.zeros(length, np.float32), success=np.zeros(length, bool), done=np.zeros(length, bool),
                   meta={"episode_id": "x", "task": "push-v3", "instruction": "push the puck"})


def planted(base: Episode) -> dict[str, Episode]:
    """Copies of a clean dream: itself and one with each defect, keyed by the reason the filter must give."""
    def copy() -> Episode:
        return Episode(**{k: v.copy() for k, v in base.frames.items()}, meta=dict(base.meta))

    out = {PASSED: copy()}
    n = len(base)
    bad = out["non-finite"] = copy()
    bad.obs[n // 2, 5] = np.nan
    out["non-finite (ended)"] = copy()
    out["non-finite (ended)"].meta["ended"] = "non-finite"
    out["action-bounds"] = copy()
    out["action-bounds"].action[n // 3, 2] = 1.7
    out["out-of-support"] = copy()
    out["out-of-support"].obs[n // 2:, 1] += 5.0
    jump = out["teleport"] = copy()
    jump.obs[n // 2:, 4:7] = jump.obs[n // 2 - 1, 4:7] + 0.2  # 20 cm in one step, inside the real range
    jump.obs[n // 2 + 1:, 4:7] = jump.obs[n // 2 - 1, 4:7]
    return out


def test_planted_bad_dreams_are_rejected_with_the_right_reason():
    rng = np.random.default_rng(0)
    real = [smooth_episode(rng) for _ in range(20)]
    support = Support.from_episodes(real)
    config = FilterConfig(support_margin=0.1, jump_margin=1.5)
    for expected, episode in planted(real[0]).items():
        assert physical_reason(episode, support, config, DYNAMIC) == expected.split(" ")[0], expected
    # a dim that never varies in real data is not judged (the world model's drift there means nothing)
    flat = [smooth_episode(rng) for _ in range(5)]
    for e in flat:
        e.obs[:, 12] = 0.0
    dream = smooth_episode(rng)
    dream.obs[:, 12] = 0.02
    support_flat = Support.from_episodes(flat)
    assert physical_reason(dream, support_flat, FilterConfig(support_margin=10, jump_margin=10), DYNAMIC) == PASSED


def test_verdict_order_disagreement_and_quality():
    physical = np.array([PASSED, "teleport", PASSED, PASSED, PASSED], dtype=object)
    dis_step = np.array([0.1, 9.0, 3.0, 0.1, 0.1])
    dis_mean = np.array([0.1, 9.0, 0.1, 0.9, 0.1])
    quality = np.array([0.95, 0.0, 0.99, 0.99, 0.3])
    reason = verdicts(physical, dis_step, dis_mean, quality, bound=1.0,
                      config=FilterConfig(disagreement_step=2.0, disagreement_mean=0.5), threshold=0.8)
    assert reason.tolist() == [PASSED, "teleport", "disagreement-step", "disagreement-total", "low-quality"]
    nan_quality = verdicts(physical[:1], dis_step[:1], dis_mean[:1], np.array([np.nan]), 1.0, FilterConfig(), 0.0)
    assert nan_quality.tolist() == ["low-quality"]


def test_threshold_for_target_precision():
    score = np.arange(20) / 20
    label = np.array([0] * 8 + [1, 0] + [1] * 10, bool)  # precision reaches 1.0 from 0.5 up
    picked = pick_threshold(score, label, np.ones(20, bool), target=0.9, min_accepted=5)
    assert picked["met"] and picked["threshold"] == pytest.approx(0.4)  # 11 of 12 from 0.40: 0.917
    assert picked["precision"] >= 0.9 and picked["accepted"] == 12
    never = pick_threshold(score, ~label, np.ones(20, bool), target=0.9, min_accepted=5)
    assert not never["met"] and never["precision"] < 0.9
    assert pick_threshold(score, label, np.zeros(20, bool), 0.9)["accepted"] == 0


def test_auc_calibration_rates_and_folds():
    rng = np.random.default_rng(0)
    score, label = rng.random(200), rng.random(200) < 0.4
    pairs = np.mean([(s_pos > s_neg) + 0.5 * (s_pos == s_neg) for s_pos in score[label] for s_neg in score[~label]])
    assert auc(score, label) == pytest.approx(pairs)
    assert auc(label.astype(float), label) == 1.0 and np.isnan(auc(score, np.ones(200, bool)))
    cal = calibration(label.astype(float), label)
    assert cal["brier"] == 0 and cal["ece"] == 0 and sum(row["n"] for row in cal["table"]) == 200
    r = rates(np.array([1, 1, 0, 0], bool), np.array([1, 0, 1, 0], bool))
    assert r["precision"]["value"] == 0.5 and r["recall"]["value"] == 0.5 and r["acceptance"]["value"] == 0.5
    assert r["precision"]["ci95"][0] < 0.5 < r["precision"]["ci95"][1]


@pytest.mark.parametrize("n_per_task", [2, 3, 5, 8, 101])
@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9])
def test_audit_folds_hold_every_task_and_depend_on_the_ids_alone(n_per_task, fraction):
    """Per task, both folds are non-empty from two audited dreams on, the test share is round(n x fraction)
    (clamped to [1, n - 1]), and the split is the same for the same ids in any insertion order."""
    tasks = ["reach-v3", "push-v3", "pick-place-v3"]
    labels = {f"gen-{t}-{i:05d}": {"task": t, "real_success": i % 2 == 0} for t in tasks for i in range(n_per_task)}
    assign_folds(labels, fraction)
    for t in tasks:
        folds = [v["fold"] for k, v in labels.items() if v["task"] == t]
        want = min(max(int(np.floor(n_per_task * fraction + 0.5)), 1), n_per_task - 1)
        assert folds.count("test") == want and folds.count("fit") == n_per_task - want
    shuffled = dict(reversed(list((k, {"task": v["task"]}) for k, v in labels.items())))
    assign_folds(shuffled, fraction)
    assert {k: v["fold"] for k, v in shuffled.items()} == {k: v["fold"] for k, v in labels.items()}
    single = {"gen-a": {"task": "reach-v3"}}
    assign_folds(single, 0.5)
    assert single["gen-a"]["fold"] == "fit"  # one audited dream: nothing to hold out, it can still teach


def test_quality_model_learns_real_outcome_and_round_trips(tmp_path):
    rng = np.random.default_rng(0)

    def data(n):
        obs, action, label = [], [], []
        for _ in range(n):
            e = smooth_episode(rng, length=int(rng.integers(10, 40)))
            hit = rng.random() < 0.5
            e.obs[-5:, 0] += 0.3 if hit else -0.3  # the hand ends up at the goal, or not
            obs.append(e.obs)
            action.append(e.action)
            label.append(hit)
        return QualityData(obs, action, rng.normal(size=(n, 8)).astype(np.float32), np.array(label),
                           np.full(n, -1), np.array(["dream"] * n), np.array([f"e{i}" for i in range(n)]))

    train, test = data(120), data(60)
    model = fit_quality(train, QualityConfig(hidden=32, epochs=40), seed=0)
    prob, value = model.score(test.obs, test.action, test.cond)
    assert auc(prob, test.label) > 0.9
    assert [len(v) for v in value] == [len(o) for o in test.obs] and all(((v >= 0) & (v <= 1)).all() for v in value)
    model.save(tmp_path / "q")
    again = QualityModel.load(tmp_path / "q").score(test.obs, test.action, test.cond)[0]
    assert np.array_equal(prob, again)
    one_class = train.subset(np.flatnonzero(train.label))
    from dreamgen.errors import ConfigError

    with pytest.raises(ConfigError, match="successes and failures"):
        fit_quality(one_class, QualityConfig(epochs=1), seed=0)


# ---------------------------------------------------------------- the verbs on a real smoke run
def test_audit_train_quality_filter_on_real_dreams(smoke_run, tmp_path):
    """generate → audit → train-quality → filter (twice) → audit, with planted bad dreams in the store (the first
    two through the CLI, the rest through the same entrypoint in this process)."""
    work, common = smoke_run["work"], smoke_run["common"]
    run_dir = tmp_path / "run"
    shutil.copytree(smoke_run["run_dir"], run_dir)
    common = [c if not c.startswith("run_dir=") else f"run_dir={run_dir}" for c in common]
    dreamgen("generate", *common, "generate.workers=0", "generate.episodes=12", cwd=work)
    store = TrajectoryStore.open(run_dir / "dream.zarr", mode="r+")
    real_episodes = list(TrajectoryStore.open(run_dir / "real.zarr").iter_episodes())
    real = Support.from_episodes(real_episodes)
    template = real_episodes[0]  # a physically perfect "dream": a real trajectory, then damaged
    template.meta = {**store.episode(0).meta, "task": template.meta["task"], "instruction": template.meta["instruction"],
                     "seed": template.meta["seed"]}
    assert physical_reason(template, real, FilterConfig(), DYNAMIC) == PASSED
    bad = {}
    for reason, e in planted(template).items():
        if reason in (PASSED, "non-finite"):  # the store itself refuses NaN; "ended non-finite" stands in
            continue
        if reason == "teleport":  # one frame where the object jumps across its real range, and back
            e = planted(template)[PASSED]
            span = real.high - real.low
            d = 4 + int(np.argmax(span[4:7] / np.maximum(real.jump[4:7], 1e-9)))
            assert 0.8 * span[d] > 3 * real.jump[d]
            e.obs[len(e) // 2, d] = real.low[d] + (0.9 if e.obs[len(e) // 2, d] < real.low[d] + span[d] / 2 else 0.1) * span[d]
        e.meta["episode_id"] = f"planted-{reason.split(' ')[0]}"
        bad[e.meta["episode_id"]] = reason.split(" ")[0]
        store.append([e])
    before = store.digest()

    audit = dreamgen("audit", *common, cwd=work)
    labels = json.loads((run_dir / "audit" / "labels.json").read_text())
    assert labels and {v["fold"] for v in labels.values()} <= {"fit", "test"}
    assert all(v["start_error"] == 0.0 for v in labels.values())  # dreams start at real initial states
    assert "learned-filter" not in json.loads((run_dir / "audit" / "audit.json").read_text())["filters"]
    assert "replayed" in audit.stderr + audit.stdout

    def verb(name: str) -> None:  # the same entrypoint in this process (no interpreter start-up)
        with contextlib.chdir(work):
            assert in_process(name, common)[0] == 0, name

    verb("train-quality")
    spec = json.loads((run_dir / "quality" / "quality.json").read_text())
    assert spec["info"]["oof"] and "quality/oof_auc_real" in spec["info"]["metrics"]
    verb("filter")
    first = TrajectoryStore.open(run_dir / "dream.zarr").meta(["episode_id", "verdict", "reason", "quality"])
    verb("filter")
    again = TrajectoryStore.open(run_dir / "dream.zarr")
    second = again.meta(["episode_id", "verdict", "reason", "quality"])
    assert again.digest() == before  # filtering never changes an episode's data
    for key in ("verdict", "reason"):
        assert second[key].tolist() == first[key].tolist()
    assert np.array_equal(first["quality"], second["quality"])
    assert set(second["verdict"]) <= {"accept", "reject"}
    reasons = dict(zip(second["episode_id"], second["reason"], strict=True))
    for eid, reason in bad.items():
        assert reasons[eid] == reason, (eid, reasons[eid])
    info = again.info["filter"]
    assert info["store_digest"] == before and "quality_threshold" in info["thresholds"]

    verb("audit")
    report = json.loads((run_dir / "audit" / "audit.json").read_text())
    assert report["replayed"] == 0 and report["filtered"]
    learned = report["filters"]["learned-filter"]["overall"]
    assert learned["accepted"] <= report["filters"]["accept-all"]["overall"]["accepted"] == report["test_dreams"]
    assert (run_dir / "audit" / "dreams_vs_real.png").is_file()


def test_filter_refuses_bad_thresholds(smoke_run, tmp_path):
    for override, match in (("filter.quality_threshold=1.5", "quality_threshold"),
                            ("filter.quality_threshold=maybe", "quality_threshold"),
                            ("filter.target_precision=0", "target_precision"),
                            ("filter.jump_margin=-1", "jump_margin")):
        result = dreamgen("filter", *smoke_run["common"], override, cwd=smoke_run["work"], check=False)
        assert result.returncode == 2 and match in result.stderr, result.stderr[-2000:]
