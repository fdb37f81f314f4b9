"""Training on the capped mix, reading a ratio sweep, and the main job (`dreamgen pipeline`) end to end."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from dreamgen.data.store import TrajectoryStore
from dreamgen.errors import ConfigError
from dreamgen.sweep import analyse, equivalent_demos, newcombe_interval, worth_sentence
from dreamgen.tracking import list_runs
from policies.bc import BCConfig, fit_bc
from tests.conftest import dreamgen, in_process

# a filter loose enough that the tiny smoke world model's dreams are accepted (the mix needs some)
LOOSE = ["filter.quality_threshold=0", "filter.support_margin=100", "filter.jump_margin=100",
         "filter.disagreement_step=100", "filter.disagreement_mean=100"]
CONFIG = BCConfig(hidden=32, layers=2, lr=3e-3, weight_decay=0.0, epochs=30, batch_size=16, action_noise_std=0.1)


def test_newcombe_interval_matches_the_published_example():
    # Newcombe (1998), Stat Med 17:873, table II example (56/70 vs 48/80), method 10: 0.0524 to 0.3339
    low, high = newcombe_interval(56, 70, 48, 80)
    assert low == pytest.approx(0.0524, abs=5e-4) and high == pytest.approx(0.3339, abs=5e-4)


def _arms(rates: dict[float, float], n: int = 150, seeds: int = 3) -> list[dict]:
    """Arms whose pooled success per cap is exactly ``rates[cap]`` (n episodes per cap, split over seeds)."""
    arms = []
    for cap, rate in rates.items():
        per_seed = n // seeds
        for seed in range(seeds):
            successes = round(rate * per_seed)
            arms.append({"cap": cap, "seed": seed, "achieved_fraction": cap * 0.9,
                         "tasks": [{"task": "reach-v3", "successes": successes, "episodes": per_seed}]})
    return arms


def test_sweep_reading_recommends_the_smallest_cap_within_noise_and_says_when_nothing_helps():
    flat = analyse(_arms({0.0: 0.5, 0.25: 0.52, 0.5: 0.48, 0.75: 0.46}))
    assert flat["recommended_cap"] == 0.0 and flat["beats_real_only"] == []
    assert flat["verdict"].startswith("no cap beats real-only")

    helps = analyse(_arms({0.0: 0.3, 0.25: 0.32, 0.5: 0.8, 0.75: 0.78}))
    assert helps["best_cap"] == 0.5 and helps["beats_real_only"] == [0.5, 0.75]
    assert helps["recommended_cap"] == 0.5  # 0.25 is far below the best; 0.75 is within noise but larger
    row = helps["per_cap"]["0.5"]
    assert row["gain"] == pytest.approx(0.5) and row["gain_ci95"][0] > 0
    assert row["tasks"]["reach-v3"]["success_rate"] == pytest.approx(0.8)

    close = analyse(_arms({0.0: 0.3, 0.25: 0.76, 0.5: 0.8}))
    assert close["best_cap"] == 0.5 and close["recommended_cap"] == 0.25

    with pytest.raises(ConfigError, match="cap 0"):
        analyse(_arms({0.25: 0.5, 0.5: 0.5}))


def _mix_data(rng: np.random.Generator):
    real_obs = rng.normal(size=(160, 6)).astype(np.float32)
    real_action = np.tile([0.5, -0.5], (160, 1)).astype(np.float32)
    dream_obs = (rng.normal(size=(200, 6)) + 3.0).astype(np.float32)  # another region of state space
    dream_action = np.tile([-0.5, 0.5], (200, 1)).astype(np.float32)
    cond = lambda n: np.ones((n, 3), np.float32)  # noqa: E731
    return (real_obs, real_action, cond(160)), (dream_obs, dream_action, cond(200))


def test_control_arms_separate_the_dreams_content_from_the_mix_itself():
    """Dreams at 0.5 beat real-only and their control; at 0.75 the control does as well as the dreams."""
    dreams = _arms({0.0: 0.3, 0.5: 0.8, 0.75: 0.7})
    controls = [{**a, "control": True} for a in _arms({0.5: 0.35, 0.75: 0.68})]
    report = analyse(dreams + controls)
    half, most = report["per_cap"]["0.5"], report["per_cap"]["0.75"]
    assert half["control"]["success_rate"] == pytest.approx(0.36)  # round(0.35 x 50) = 18 of 50 per seed
    assert half["content_gain"] == pytest.approx(half["success_rate"] - half["control"]["success_rate"])
    assert half["content_gain_ci95"][0] > 0 and most["content_gain_ci95"][0] <= 0
    assert report["beats_control"] == [0.5] and report["beats_real_only"] == [0.5, 0.75]
    assert "dreams beat their control arm" in report["verdict"] and "at cap 0.75 the dreams do not beat" in report["verdict"]
    assert report["per_cap"]["0"]["success_rate"] == pytest.approx(0.3)  # controls never pool into the dream rows
    assert "control" not in report["per_cap"]["0"]
    assert analyse(dreams)["verdict"] == analyse(dreams)["verdict"] and "control" not in analyse(dreams)["verdict"]


def test_bc_on_the_capped_mix_uses_dreams_only_up_to_the_cap_at_a_fixed_step_budget():
    (obs, action, cond), dream = _mix_data(np.random.default_rng(0))
    epochs: dict[float, int] = {}
    policies = {}
    for cap in (0.0, 0.25, 0.5):
        calls: list[int] = []
        policies[cap] = fit_bc(obs, action, cond, CONFIG, seed=1, dream=dream, max_dream_fraction=cap,
                               on_epoch=lambda e, loss, calls=calls: calls.append(e))
        epochs[cap] = len(calls)
    assert set(epochs.values()) == {CONFIG.epochs}  # same number of gradient steps whatever the cap
    assert policies[0.0].info["achieved_dream_fraction"] == 0.0
    assert 0.2 < policies[0.25].info["achieved_dream_fraction"] <= 0.25
    assert 0.45 < policies[0.5].info["achieved_dream_fraction"] <= 0.5
    real_only = fit_bc(obs, action, cond, CONFIG, seed=1)  # cap 0 never touches the dreams
    for a, b in zip(real_only.model.state_dict().values(), policies[0.0].model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    dream_obs, dream_action, dream_cond = dream
    ignored = policies[0.0].act(dream_obs, dream_cond)
    learned = policies[0.5].act(dream_obs, dream_cond)
    assert np.abs(learned - dream_action).mean() < 0.5 * np.abs(ignored - dream_action).mean()


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory) -> dict:
    """The smoke main job, uninterrupted, with a filter loose enough to accept dreams; arms run as Ray tasks.
    The BC policy (trained by the pipeline) dreams, so a later round can dream with it retrained."""
    work = tmp_path_factory.mktemp("pipeline")
    run_dir = work / "run"
    uri = f"sqlite:///{work / 'mlflow.db'}"
    common = ["experiment=smoke", f"run_dir={run_dir}", f"tracking.uri={uri}", "progress=false",
              "generate.sampler.kind=policy"]
    result = dreamgen("pipeline", *common, *LOOSE, "sweep.workers=2", cwd=work, timeout=900)
    return {"work": work, "run_dir": run_dir, "uri": uri, "common": common, "result": result}


def report_accepted(store: TrajectoryStore) -> int:
    return int((store.meta(["verdict"])["verdict"] == "accept").sum())


def outcome(report: dict) -> dict:
    """What a pipeline run produced, without its timings: ids, digests, verdict counts, success per arm."""
    return {"world_model": report["world_model"]["world_model_id"], "dreams": report["generate"]["digest"],
            "accepted": report["filter"]["filter/accepted"], "threshold": report["filter"]["filter/quality_threshold"],
            "audit": {k: v["overall"] for k, v in report["audit"]["filters"].items()},
            "per_cap": report["sweep"]["per_cap"], "verdict": report["sweep"]["verdict"]}


def test_pipeline_main_job_end_to_end(pipeline_run):
    work, run_dir, uri, common = (pipeline_run[k] for k in ("work", "run_dir", "uri", "common"))
    out = pipeline_run["result"].stdout
    assert "real-simulator success per cap" in out and "recommended cap" in out and "filter precision" in out

    report = json.loads((run_dir / "report.json").read_text())
    swept = report["sweep"]
    assert swept["caps"] == [0.0, 0.5] and swept["seeds"] == [0]
    dream = TrajectoryStore.open(run_dir / "dream.zarr")
    accepted = int((dream.meta(["verdict"])["verdict"] == "accept").sum())
    assert accepted > 0 and accepted == report["filter"]["filter/accepted"]
    spec = json.loads((run_dir / "sweep" / "cap0.5-seed0" / "policy" / "policy.json").read_text())
    selection = spec["info"]["dream_selection"]
    assert selection["store_digest"] == dream.digest() and selection["episodes"] == accepted
    assert selection["filter"]["thresholds"] == dream.info["filter"]["thresholds"]
    assert 0 < selection["achieved_fraction"] <= 0.5 and spec["info"]["seed"] == 0
    base = json.loads((run_dir / "sweep" / "cap0-seed0" / "policy" / "policy.json").read_text())
    assert base["info"]["dream_selection"] is None and base["info"]["achieved_dream_fraction"] == 0.0
    control = json.loads((run_dir / "sweep" / "control0.5-seed0" / "policy" / "policy.json").read_text())
    assert control["info"]["dream_selection"]["control"] is True  # the same share, re-drawn real frames
    assert control["info"]["achieved_dream_fraction"] == pytest.approx(0.5, abs=0.02)
    assert (run_dir / "sweep" / "sweep.png").is_file()
    episodes = 3 * 2  # evaluate.n_episodes x tasks, pooled per cap
    assert all(row["episodes"] == episodes for row in swept["per_cap"].values())
    assert swept["per_cap"]["0.5"]["control"]["episodes"] == episodes and "control arm" in swept["verdict"]
    assert "ctl 0.5" in out

    # verdicts changed after the filter ran (edited, or a filter interrupted between columns and record): refused
    import mlflow

    from jobs.train_policy import dream_selection

    shutil.copytree(run_dir / "dream.zarr", work / "edited.zarr")
    edited = TrajectoryStore.open(work / "edited.zarr", mode="r+")
    flipped = np.where(edited.meta(["verdict"])["verdict"] == "accept", "reject", "accept")
    edited.update_meta("verdict", flipped)
    with pytest.raises(ConfigError, match="its verdicts changed since `dreamgen filter` recorded them"):
        dream_selection(edited, ["accept"])
    assert dream_selection(dream, ["accept"])[0].sum() == accepted  # the untouched store still trains

    # the experiment opens in MLflow's model-training view (not the GenAI one)
    experiment = mlflow.MlflowClient(tracking_uri=uri).get_experiment_by_name("dreamgen")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"

    runs = {r["run_name"]: r for r in list_runs(uri, "dreamgen")}
    parent = runs["smoke/sweep"]
    children = [r for r in runs.values() if r["tags"].get("mlflow.parentRunId") == parent["run_id"]]
    assert sorted(r["run_name"] for r in children) == ["smoke/sweep/cap0-seed0", "smoke/sweep/cap0.5-seed0",
                                                       "smoke/sweep/control0.5-seed0"]
    assert parent["tags"]["mlflow.parentRunId"] == runs["smoke/pipeline"]["run_id"]
    assert parent["metrics"]["sweep/recommended_cap"] == swept["recommended_cap"]
    for child in children:
        arm = json.loads((run_dir / "sweep" / child["run_name"].split("/")[-1] / "arm.json").read_text())
        assert child["metrics"]["policy/success_rate"] == pytest.approx(arm["overall"]["success_rate"])

    # a rerun skips every finished arm (same dream selection): nothing is trained again
    stamps = {p: p.stat().st_mtime_ns for p in (run_dir / "sweep").glob("*/arm.json")}
    again = dreamgen("sweep", *common, cwd=work)
    assert "3 arms (3 already finished)" in again.stdout + again.stderr
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps

    # a selection that holds no dream: nothing to mix, said before any arm trains (the smoke filter accepts
    # every dream, so selecting the rejected ones selects none); a verdict the filter never writes is refused
    verdicts = set(TrajectoryStore.open(run_dir / "dream.zarr").meta(["verdict"])["verdict"])
    assert verdicts == {"accept"}, verdicts
    nothing = dreamgen("sweep", *common, "policy.dream_verdicts=[reject]", cwd=work, check=False)
    assert nothing.returncode == 2 and "the filter accepted no dream" in nothing.stderr, nothing.stderr[-2000:]
    typo = dreamgen("sweep", *common, "policy.dream_verdicts=[unsure]", cwd=work, check=False)
    assert typo.returncode == 2 and "'unsure' is not a filter verdict" in typo.stderr, typo.stderr[-2000:]

    # an arm trained under other settings is never passed off as this one
    other = dreamgen("sweep", *common, "policy.epochs=3", cwd=work, check=False)
    assert other.returncode == 2 and "holds a different run" in other.stderr and "policy.epochs" in other.stderr


def test_pipeline_killed_in_three_stages_resumes_to_the_same_report(pipeline_run):
    """SIGKILL in train-world-model, SIGINT in generate, SIGKILL in the sweep: each rerun of the same command
    keeps the finished stages and resumes; the end is the uninterrupted run's report. The kill is sent once
    the stage before has been recorded, so it lands anywhere from that stage's start to its end — every
    landing point must give the same result. The interrupted run lives in another directory (another
    working directory, run_dir and MLflow database): ids, the audit split, verdicts and arm results come from
    content and settings, never from where the run lives."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import REPO

    reference_dir = pipeline_run["run_dir"]
    reference = json.loads((reference_dir / "report.json").read_text())
    tmp_path = pipeline_run["work"] / "another-place" / "deeper"
    tmp_path.mkdir(parents=True)
    run_dir = tmp_path / "run"
    ledger = run_dir / "pipeline" / "stages.json"
    common = [*[c for c in pipeline_run["common"] if not c.startswith(("run_dir=", "tracking.uri="))],
              f"run_dir={run_dir}", f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", *LOOSE, "sweep.workers=2"]

    def interrupt(after: str, sig: int) -> subprocess.CompletedProcess:
        proc = subprocess.Popen([sys.executable, "-m", "dreamgen.cli", "pipeline", *common], cwd=tmp_path,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "PYTHONPATH": str(REPO)})
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and proc.poll() is None:
            if ledger.is_file() and after in json.loads(ledger.read_text())["done"]:
                break
            time.sleep(0.1)
        assert proc.poll() is None, f"the pipeline ended before stage {after} was recorded:\n{proc.stderr.read()[-3000:]}"
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=300)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    killed = interrupt("collect", signal.SIGKILL)  # during train-world-model
    assert killed.returncode == -signal.SIGKILL and (run_dir / "real.zarr").is_dir()
    stopped = interrupt("world_model", signal.SIGINT)  # during generate: committed chunks are kept
    assert stopped.returncode == 130 and "rerun the same command to resume" in stopped.stderr
    assert "Traceback" not in stopped.stderr
    assert set(json.loads(ledger.read_text())["done"]) >= {"collect", "world_model"}
    killed = interrupt("audit", signal.SIGKILL)  # during the sweep: finished arms are kept
    assert killed.returncode == -signal.SIGKILL
    done = dreamgen("pipeline", *common, cwd=tmp_path, timeout=900)
    assert "finished in an earlier run of this command; kept" in done.stdout + done.stderr
    assert not list(run_dir.rglob("*.partial"))

    resumed = json.loads((run_dir / "report.json").read_text())
    assert outcome(resumed) == outcome(reference)
    labels = [json.loads((d / "audit" / "labels.json").read_text()) for d in (reference_dir, run_dir)]
    assert {k: v["fold"] for k, v in labels[0].items()} == {k: v["fold"] for k, v in labels[1].items()}
    assert {v["fold"] for v in labels[0].values()} == {"fit", "test"}
    columns = ["episode_id", "verdict", "reason"]
    assert all(np.array_equal(a, b) for a, b in zip(*(TrajectoryStore.open(d / "dream.zarr").meta(columns).values()
                                                      for d in (reference_dir, run_dir)), strict=True))

    # the same run asked for with other settings is refused, naming them, and nothing is touched
    before = ledger.read_text()
    other = dreamgen("pipeline", *common, "filter.jump_margin=3", cwd=tmp_path, check=False)
    assert other.returncode == 2 and "filter.jump_margin" in other.stderr and "Traceback" not in other.stderr
    assert ledger.read_text() == before
    # (a second dream round on a finished run: the slow test below)


@pytest.mark.slow
def test_a_second_dream_round_keeps_round_one_and_its_sweep_measures_round_twos_dreams(pipeline_run):
    """A second dream round added to a finished run: round 1 is kept; BC retrained on round 1's accepted dreams
    dreams round 2, which is audited and filtered; the sweep measures round 2's dreams. (Slow: a second
    pipeline run, then nearly every stage again.)"""
    tmp_path = pipeline_run["work"] / "two-rounds"
    tmp_path.mkdir()
    run_dir = tmp_path / "run"
    ledger = run_dir / "pipeline" / "stages.json"
    common = [*[c for c in pipeline_run["common"] if not c.startswith(("run_dir=", "tracking.uri="))],
              f"run_dir={run_dir}", f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", *LOOSE, "sweep.workers=2"]
    dreamgen("pipeline", *common, cwd=tmp_path, timeout=900)
    first = json.loads(ledger.read_text())["done"]
    two = dreamgen("pipeline", *common, "pipeline.rounds=2", cwd=tmp_path, timeout=900)
    assert "round 2 (BC retrained on round 1's" in two.stdout
    done = json.loads(ledger.read_text())["done"]
    assert {k: done[k] for k in first} == first  # every round-1 stage kept as it was
    assert {f"{s}@2" for s in ("train_policy", "generate", "audit_replay", "train_quality", "filter", "audit",
                               "sweep")} <= set(done)
    round1, round2 = TrajectoryStore.open(run_dir / "dream.zarr"), TrajectoryStore.open(run_dir / "round2" / "dream.zarr")
    policy2 = json.loads((run_dir / "round2" / "policy" / "policy.json").read_text())["info"]
    assert policy2["dream_selection"]["store_digest"] == round1.digest()  # round 1's filtered dreams
    assert policy2["dream_selection"]["episodes"] == report_accepted(round1) > 0
    samplers = set(round2.meta(["sampler"])["sampler"].tolist())
    assert len(samplers) == 1 and str(run_dir / "round2" / "policy") in samplers.pop()
    assert round2.info["filter"]["episodes"] == len(round2)  # filtered
    assert (run_dir / "round2" / "audit" / "labels.json").is_file()
    arm = json.loads((run_dir / "round2" / "sweep" / "cap0.5-seed0" / "arm.json").read_text())
    assert arm["dream_selection"]["store_digest"] == round2.digest()
    final = json.loads((run_dir / "report.json").read_text())
    assert final["sweep"]["per_cap"]["0.5"] == done["sweep@2"]["report"]["per_cap"]["0.5"]
    assert final["sweep"]["per_cap"]["0"] == first["sweep"]["report"]["per_cap"]["0"]  # real-only: same seeds


def test_mix_and_sweep_refuse_bad_input(smoke_run, tmp_path, capsys):
    run_dir = smoke_run["run_dir"]
    base = ["experiment=smoke", f"tracking.uri={smoke_run['uri']}", "progress=false",
            f"policy.store={run_dir / 'real.zarr'}"]
    fresh = tmp_path / "new"
    for args, match in (
        (["train-policy", "policy.max_dream_fraction=1.0"], "policy.max_dream_fraction=1.0"),
        (["train-policy", "policy.max_dream_fraction=0.5"], "policy.dream_store is null"),
        (["train-policy", f"policy.dream_store={run_dir / 'real.zarr'}", "policy.max_dream_fraction=0.5"],
         "no filter verdicts"),
        (["sweep", "sweep.caps=[0.25,0.5]"], "must include 0"),
        (["sweep", "sweep.caps=[0,0.5,0.5000001]"], "0.5 and 0.5000001 name the same arm (cap0.5)"),
        (["sweep", "sweep.seeds=[]"], "sweep.seeds"),
        (["sweep", f"sweep.dream_store={run_dir / 'real.zarr'}"], "no filter verdicts"),
    ):
        code, err = in_process(args[0], [*base, f"run_dir={fresh}", *args[1:]], capsys)
        assert code == 2 and match in err, (args, err[-2000:])
        assert not fresh.exists()  # refused before anything was written


def test_a_real_only_sweep_needs_no_dream_store(smoke_run, tmp_path, capsys):
    """sweep.caps=[0] without control arms: the real-only baseline alone, with no dream store anywhere."""
    run_dir = smoke_run["run_dir"]
    code, err = in_process("sweep", ["experiment=smoke", f"tracking.uri={smoke_run['uri']}", "progress=false",
                                     f"run_dir={tmp_path / 'run'}", f"policy.store={run_dir / 'real.zarr'}",
                                     "sweep.caps=[0]", "sweep.control=false", "evaluate.n_episodes=1",
                                     f"sweep.dream_store={tmp_path / 'no-dreams.zarr'}"], capsys)
    assert code == 0, err[-2000:]
    report = json.loads((tmp_path / "run" / "sweep" / "sweep.json").read_text())
    assert report["caps"] == [0.0] and report["dream_selection"] is None
    assert report["per_cap"]["0"]["episodes"] == 2  # 1 episode x 2 tasks


@pytest.mark.slow  # a learning run of about a minute (make test-slow); the default suite keeps its 15-minute budget
def test_second_policy_family_sb3_clones_the_mix_then_finetunes_in_the_dream(smoke_run, tmp_path):
    """policy.family=sb3 on a filtered smoke dream store: an SB3 PPO actor, its checkpoint loadable and acting."""
    from policies import load_policy

    work, source = smoke_run["work"], smoke_run["run_dir"]
    run_dir = tmp_path / "run"
    shutil.copytree(source, run_dir)
    common = ["experiment=smoke", f"run_dir={run_dir}", f"tracking.uri={smoke_run['uri']}", "progress=false"]
    dreamgen("generate", *common, "generate.workers=0", "generate.episodes=4", cwd=work)
    dreamgen("train-quality", *common, cwd=work)
    dreamgen("filter", *common, *LOOSE, cwd=work)
    dream = TrajectoryStore.open(run_dir / "dream.zarr")
    out = tmp_path / "sb3"
    dreamgen("train-policy", *[c for c in common if not c.startswith("run_dir=")], f"run_dir={out}",
             f"policy.store={run_dir / 'real.zarr'}", f"policy.sb3.world_model={run_dir / 'world_model'}",
             f"policy.dream_store={run_dir / 'dream.zarr'}", "policy.max_dream_fraction=0.5", "policy.family=sb3",
             "policy.sb3.steps=256", "policy.sb3.envs=4", cwd=work)
    policy = load_policy(out / "policy")
    assert policy.kind == "sb3" and policy.info["family"] == "sb3" and policy.info["finetune_steps"] == 256
    selection = policy.info["dream_selection"]
    assert selection["store_digest"] == dream.digest() and selection["episodes"] > 0
    assert 0 < policy.info["achieved_dream_fraction"] <= 0.5
    obs = dream.episode(0).obs[:5]
    action = policy.act(obs, np.zeros((5, policy.cond_dim), np.float32))
    assert action.shape == (5, 4) and np.all(np.abs(action) <= 1)


def test_a_pipeline_whose_filter_accepted_nothing_sweeps_real_only_and_says_so(monkeypatch):
    """The last stage of a long pipeline does not die on an empty filter: the real-only arms run alone and the
    summary says there was nothing to mix (the `sweep` verb itself refuses: see the main-job test)."""
    from hydra import compose, initialize_config_dir

    from jobs import pipeline, sweep
    from tests.conftest import REPO

    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base=None):
        cfg = compose(config_name="config", overrides=["experiment=smoke"])
    seen: list[tuple[list[float], bool]] = []
    monkeypatch.setattr(sweep, "nothing_to_mix", lambda c: True)
    monkeypatch.setattr(sweep, "run", lambda c: seen.append((list(c.sweep.caps), bool(c.sweep.control))) or {"caps": [0.0]})
    report = pipeline.sweep_stage(cfg)
    assert seen == [([0.0], False)] and report["nothing_to_mix"] is True
    assert list(cfg.sweep.caps) == [0.0, 0.5]  # the run's own config is untouched
    monkeypatch.setattr(sweep, "nothing_to_mix", lambda c: False)
    assert "nothing_to_mix" not in pipeline.sweep_stage(cfg) and seen[-1] == ([0.0, 0.5], True)


def test_a_sweep_judged_both_ways_says_how_far_the_dreams_ranking_holds_and_one_judged_in_the_dream_is_labelled(
        smoke_run, tmp_path, capsys):
    """sweep.judge=both: every arm evaluated on the real simulator and judged in the dream, the ranking statistics
    over the arms and the scatter plot; then sweep.judge=dream on the same arms reuses them (no arm trains again)
    and reports the dream's judgement, labelled, with nothing logged as real success."""
    run_dir = smoke_run["run_dir"]
    args = ["experiment=smoke", f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", "progress=false",
            f"run_dir={tmp_path / 'run'}", f"policy.store={run_dir / 'real.zarr'}", "sweep.caps=[0]", "sweep.seeds=[0,1]",
            "sweep.control=false", "evaluate.n_episodes=2", f"evaluate.world_model={run_dir / 'world_model'}",
            f"sweep.dream_store={tmp_path / 'no-dreams.zarr'}", "sweep.workers=0"]
    code, err = in_process("sweep", [*args, "sweep.judge=both"], capsys)
    assert code == 0, err[-2000:]
    out = tmp_path / "run" / "sweep"
    report = json.loads((out / "sweep.json").read_text())
    judged = report["judge"]
    assert report["judged_in"] == "real" and (out / "sweep_judge.png").is_file()
    assert [row["arm"] for row in judged["arms"]] == ["cap0-seed0", "cap0-seed1"]
    pearson = judged["ranking"]["pearson"]
    assert judged["ranking"]["policies"] == 2 and (np.isnan(pearson) or -1.0 <= pearson <= 1.0)  # nan: one side ties
    arms = [json.loads((out / name / "arm.json").read_text()) for name in ("cap0-seed0", "cap0-seed1")]
    assert [row["real"] for row in judged["arms"]] == [a["overall"]["success_rate"] for a in arms]
    assert [row["dream"] for row in judged["arms"]] == [a["dream"]["overall"]["success_rate"] for a in arms]
    assert all(a["dream"]["tasks"][0]["dreams"] == 2 * a["dream"]["judge"]["members"] for a in arms)
    assert "the dream as judge of these 2 arms" in (out / "sweep.txt").read_text()
    assert all(a["seconds"]["train"] > 0 and a["seconds"]["evaluate"] > 0 for a in arms)  # what an arm costs
    assert [row["seconds"] for row in report["arms"]] == [a["seconds"] for a in arms]
    assert "time per arm (bc, 2 arms timed): training" in (out / "sweep.txt").read_text()

    stamps = [(out / name / "policy").stat().st_mtime_ns for name in ("cap0-seed0", "cap0-seed1")]
    code, err = in_process("sweep", [*args, "sweep.judge=dream"], capsys)
    assert code == 0, err[-2000:]
    dreamed = json.loads((out / "sweep.json").read_text())
    assert dreamed["judged_in"] == "dream" and dreamed["verdict"].startswith("JUDGED IN THE DREAM")
    assert dreamed["per_cap"]["0"]["successes"] == sum(a["dream"]["overall"]["successes"] for a in arms)
    assert [(out / name / "policy").stat().st_mtime_ns for name in ("cap0-seed0", "cap0-seed1")] == stamps
    children = [r for r in list_runs(f"sqlite:///{tmp_path / 'mlflow.db'}", "dreamgen")
                if r["run_name"].startswith("smoke/sweep/")]
    assert children and all("policy/success_rate" not in r["metrics"] for r in children[:2])

    code, err = in_process("sweep", [*args, "sweep.judge=oracle"], capsys)
    assert code == 2 and "sweep.judge='oracle'; accepted: real, dream, both" in err


@pytest.mark.slow  # loads the world and quality models again (~30 s); the default suite keeps its 15-minute budget
def test_the_filter_rejects_dreams_that_break_a_safety_rule_by_name_and_counts_them(pipeline_run, tmp_path):
    """filter.reject_unsafe=true with a workspace no hand is ever in: every dream that passes the physical
    checks is rejected as unsafe:hand_out_of_workspace; the record counts the share per task either way."""
    source = pipeline_run["run_dir"]
    dreams = tmp_path / "dream.zarr"
    shutil.copytree(source / "dream.zarr", dreams)  # the pipeline's own store keeps its verdicts
    common = ["experiment=smoke", f"run_dir={tmp_path / 'run'}", f"tracking.uri=sqlite:///{tmp_path / 'm.db'}",
              "progress=false", f"filter.store={dreams}", f"filter.real_store={source / 'real.zarr'}",
              f"filter.world_model={source / 'world_model'}", f"filter.quality={source / 'quality'}"]
    nowhere = ["safety.workspace_low=[5,5,5]", "safety.workspace_high=[6,6,6]"]
    code, _ = in_process("filter", [*common, *LOOSE, *nowhere, "filter.reject_unsafe=true"])
    assert code == 0
    store = TrajectoryStore.open(dreams)
    meta = store.meta(["reason", "verdict", "task"])
    assert set(meta["reason"]) == {"unsafe:hand_out_of_workspace"}  # LOOSE passes every other check
    assert set(meta["verdict"]) == {"reject"}
    record = store.info["filter"]
    assert record["reject_unsafe"] is True
    assert {t: r["hand_out_of_workspace"] for t, r in record["unsafe_rates"].items()} == {
        t: 1.0 for t in set(meta["task"])}


def test_what_dreams_are_worth_in_demos_is_read_off_the_real_only_curve_in_log_demos():
    curve = [(5, 0.2), (10, 0.4), (20, 0.6), (40, 0.8)]
    assert equivalent_demos(curve, 0.4) == pytest.approx(10.0)  # on a point: that point
    assert equivalent_demos(curve, 0.5) == pytest.approx(200 ** 0.5)  # half-way in log(demos): the geometric mean
    assert equivalent_demos(curve, 0.1) == 5.0 and equivalent_demos(curve, 0.2) == 5.0  # no better than the demos
    assert equivalent_demos(curve, 0.9) is None  # beyond the curve's last point
    assert worth_sentence(200 ** 0.5, 5, 40) == "dreams were worth 14.1 demos per task (9.1 more than the 5 they came with)"
    assert "no more demos than the 5" in worth_sentence(5.0, 5, 40) and "more than 40" in worth_sentence(None, 5, 40)


def _pipeline(real: float, dreams: float, control: float, n: int = 150) -> dict:
    """One pipeline's sweep (one task, 3 training seeds) with these pooled rates at cap 0 and 0.5 and its control."""
    return analyse(_arms({0.0: real, 0.5: dreams}, n=n) + [{**a, "control": True} for a in _arms({0.5: control}, n=n)])


def test_a_gain_pooled_over_pipelines_holds_their_spread_and_the_evaluations():
    from dreamgen.sweep import pipeline_bootstrap

    # certain outcomes (every episode fails at cap 0, succeeds with dreams): no noise to draw, the gain is exactly 1
    sure = pipeline_bootstrap([_pipeline(0.0, 1.0, 0.0)] * 3, "0.5")
    assert sure["overall"]["gain"] == 1.0 and sure["overall"]["ci95"] == [1.0, 1.0]
    # pipelines that disagree entirely (gain 1, 0, 0 with certain outcomes): the mean is 1/3, and the interval is
    # the spread of a mean of 3 draws from {1, 0, 0}: from 0 to 1, nothing from the episodes
    split = pipeline_bootstrap([_pipeline(0.0, 1.0, 0.0), _pipeline(0.0, 0.0, 0.0), _pipeline(1.0, 1.0, 0.0)], "0.5")
    assert split["overall"]["gain"] == pytest.approx(1 / 3) and split["overall"]["ci95"] == [0.0, 1.0]
    assert split["overall"]["per_pipeline"] == [1.0, 0.0, 0.0]
    # against the control arm: dreams 1.0, control 0.0 in every pipeline
    assert pipeline_bootstrap([_pipeline(1.0, 1.0, 0.0)] * 2, "0.5", against="control")["overall"]["gain"] == 1.0
    # the same rates in every pipeline: the interval is the evaluation's only, and it narrows with more episodes
    same = pipeline_bootstrap([_pipeline(0.3, 0.5, 0.3)] * 3, "0.5")
    spread = pipeline_bootstrap([_pipeline(0.3, 0.7, 0.3), _pipeline(0.3, 0.5, 0.3), _pipeline(0.3, 0.3, 0.3)], "0.5")
    width = lambda r: r["overall"]["ci95"][1] - r["overall"]["ci95"][0]  # noqa: E731
    assert same["overall"]["gain"] == pytest.approx(0.2) and spread["overall"]["gain"] == pytest.approx(0.2)
    assert 0 < width(same) < width(spread)  # between-pipeline spread widens it
    assert same["tasks"]["reach-v3"] == same["overall"]  # one task: per task is overall
    with pytest.raises(ConfigError, match="no control arm"):
        pipeline_bootstrap([analyse(_arms({0.0: 0.3, 0.5: 0.5}))], "0.5", against="control")
    with pytest.raises(ConfigError, match="no arm at cap 0.75"):
        pipeline_bootstrap([_pipeline(0.3, 0.5, 0.3)], "0.75")


def test_the_summary_names_each_tasks_gain_over_real_only_and_over_the_control():
    from dreamgen.sweep import format_sweep, task_gains

    dreams = _arms({0.0: 0.3, 0.5: 0.8, 0.75: 0.7})
    report = analyse(dreams + [{**a, "control": True} for a in _arms({0.5: 0.36, 0.75: 0.68})])
    cell = report["per_cap"]["0.5"]["tasks"]["reach-v3"]
    assert cell["content_gain"] == pytest.approx(0.8 - 0.36) and cell["content_gain_ci95"][0] > 0
    sentence = task_gains(report)  # the best cap, 0.5
    assert sentence.startswith("per-task gain at cap 0.5 over real-only: reach-v3 +0.50 [")
    assert sentence.count("beyond noise") == 2  # over real-only and over its control
    assert "over control +0.02" in task_gains(report, "0.75") and task_gains(report, "0.75").count("beyond noise") == 1
    assert sentence in format_sweep(report)
    assert "none to name" in task_gains(analyse(_arms({0.0: 0.5, 0.5: 0.2})))  # real-only is the best cap

