"""Generation: plans, samplers, provenance, exactly-once under killed workers and killed jobs (real Ray)."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from dreamgen.data.store import TrajectoryStore
from dreamgen.dream.core import DreamConfig
from dreamgen.errors import ConfigError, InstructionError, StoreError
from dreamgen.sim.metaworld import METAWORLD
from generation.plan import Request, make_plan, parse_entries, resolve_requests
from generation.service import committed_chunks, open_dream_store, run_plan
from policies.samplers import SamplerSpec, make_sampler
from tests.conftest import REPO, dreamgen, in_process

ENDED = {"success", "done", "horizon", "halted", "non-finite"}


def plan_for(requests, *, seed=0, sampler=None, chunk=2, envs=2, world_model="wm", wm_id="wm-x",
             start_store="real.zarr", start_digest="digest-x"):
    return make_plan(requests=requests, embeddings=np.zeros((len(requests), 384), np.float32),
                     world_model=world_model, world_model_id=wm_id, start_store=start_store,
                     start_store_digest=start_digest, sampler=sampler or SamplerSpec(),
                     dream=DreamConfig(horizon=20), envs=envs, episodes_per_chunk=chunk, seed=seed,
                     embodiment=METAWORLD)


REQUESTS = [Request("open the drawer", 5, "drawer-open-v3", "open the drawer", 1.0, False),
            Request("pull out the drawer", 3, "drawer-open-v3", "pull the drawer out", 0.98, False)]


# ---------------------------------------------------------------- plan and samplers (no Ray)
def test_plan_splits_requests_into_seeded_chunks_and_a_stable_job_id():
    plan = plan_for(REQUESTS)
    assert [(c.request, c.first, c.episodes) for c in plan.chunks] == [
        (0, 0, 2), (0, 2, 2), (0, 4, 1), (1, 0, 2), (1, 2, 1)]
    assert [c.index for c in plan.chunks] == list(range(5)) and plan.episodes == 8
    assert len({c.seed for c in plan.chunks}) == 5
    assert plan_for(REQUESTS).job_id == plan.job_id and plan_for(REQUESTS).chunks == plan.chunks
    changed = [plan_for(REQUESTS, seed=1), plan_for(REQUESTS, sampler=SamplerSpec("random")),
               plan_for(REQUESTS, chunk=3), plan_for(REQUESTS, wm_id="wm-y"), plan_for(REQUESTS[:1])]
    assert len({p.job_id for p in changed} | {plan.job_id}) == 6
    assert plan_for(REQUESTS, seed=1).chunks[0].seed != plan.chunks[0].seed
    # identity from content, never from where it lives: other paths, the same id; other content, another
    policy = SamplerSpec("policy", checkpoint="/a/run/policy", checkpoint_id="sha256:abc")
    moved = [plan_for(REQUESTS, world_model="/elsewhere/wm", start_store="/elsewhere/real.zarr"),
             plan_for(REQUESTS, sampler=policy).job_id == plan_for(
                 REQUESTS, sampler=dataclasses.replace(policy, checkpoint="/b/policy")).job_id]
    assert moved[0].job_id == plan.job_id and moved[1]
    assert plan_for(REQUESTS, start_digest="digest-y").job_id != plan.job_id
    assert plan_for(REQUESTS, sampler=policy).job_id != plan_for(
        REQUESTS, sampler=dataclasses.replace(policy, checkpoint_id="sha256:abd")).job_id


def test_instruction_entries_are_checked():
    assert parse_entries(["a", {"text": "b", "count": 3}], 7) == [("a", 7), ("b", 3)]
    for bad, match in (([], "empty"), ([{"txt": "a"}], r"instructions\[0\]"), ([{"text": "a", "count": 0}], "count=0"),
                       (["a", 5], r"instructions\[1\]")):
        with pytest.raises(ConfigError, match=match):
            parse_entries(bad, 7)


def test_requests_resolve_paraphrases_refuse_nonsense_and_flag_novel():
    from dreamgen.language import make_resolver

    resolver = make_resolver(METAWORLD.tasks, min_similarity=0.6, ambiguity_margin=0.03)
    tasks = ["drawer-open-v3", "button-press-topdown-v3"]
    (para,) = resolve_requests([("pull out the drawer", 4)], resolver, tasks, allow_novel=False)
    assert (para.task, para.matched, para.novel) == ("drawer-open-v3", "pull the drawer out", False)
    assert 0.6 < para.similarity < 1.0
    with pytest.raises(InstructionError, match="closest known instructions.*allow_novel"):
        resolve_requests([("bake a cake", 4)], resolver, tasks, allow_novel=False)
    (novel,) = resolve_requests([("bake a cake", 4)], resolver, tasks, allow_novel=True)
    assert novel.novel and novel.task == "" and novel.matched and novel.similarity < 0.6
    with pytest.raises(InstructionError, match="window-open-v3.*not trained on"):
        resolve_requests([("open the window", 4)], resolver, tasks, allow_novel=True)


def test_samplers_stay_in_bounds_depend_only_on_their_rng_and_refuse_novel_experts():
    obs = np.zeros((3, 39), np.float32)
    obs[:, 4:7] = [0.0, 0.7, 0.1]
    actions = [make_sampler(SamplerSpec("random"), "", np.random.default_rng(4), action_dim=4).act(obs, obs)
               for _ in range(2)]
    np.testing.assert_array_equal(*actions)
    assert actions[0].shape == (3, 4) and np.abs(actions[0]).max() <= 1
    expert = make_sampler(SamplerSpec("expert", noise=5.0), "drawer-open-v3", np.random.default_rng(0), action_dim=4,
                          robot=METAWORLD)
    assert np.abs(expert.act(obs, obs)).max() <= 1  # huge noise is clipped to the action box
    assert "oracle" in SamplerSpec("expert").name
    with pytest.raises(ConfigError, match="novel instruction"):
        make_sampler(SamplerSpec("expert"), "", np.random.default_rng(0), action_dim=4, robot=METAWORLD)
    with pytest.raises(ConfigError, match="accepted: expert, policy, random, risky, sb3"):
        SamplerSpec("greedy")


def test_a_store_of_another_job_is_refused(tmp_path):
    plan = plan_for(REQUESTS)
    store, created = open_dream_store(tmp_path / "d.zarr", plan, obs_dim=39, action_dim=4)
    assert created and committed_chunks(store, plan) == set()
    with pytest.raises(StoreError, match="holds dreams of job"):
        open_dream_store(tmp_path / "d.zarr", plan_for(REQUESTS, seed=9), obs_dim=39, action_dim=4)


# ---------------------------------------------------------------- the real thing (smoke world model, real Ray)
def smoke_plan(smoke_run, **kw):
    from dreamgen.world_model.checkpoint import load_world_model

    run_dir = smoke_run["run_dir"]
    model = load_world_model(run_dir / "world_model")
    table = model.instructions
    requests = [Request(text, 6, task, text, 1.0, False) for text, task in zip(table.texts, table.tasks, strict=True)]
    plan = make_plan(requests=requests, embeddings=table.embeddings, world_model=str(run_dir / "world_model"),
                     world_model_id=model.info["world_model_id"], start_store=str(run_dir / "real.zarr"),
                     start_store_digest=TrajectoryStore.open(run_dir / "real.zarr").digest(),
                     sampler=SamplerSpec("expert", noise=0.2), dream=DreamConfig(horizon=40), envs=2,
                     episodes_per_chunk=2, seed=kw.get("seed", 3), embodiment=METAWORLD)
    return plan, model


def check_complete(store: TrajectoryStore, plan, real: TrajectoryStore) -> None:
    meta = store.meta()
    assert len(store) == plan.episodes
    expected = {plan.episode_id(c, j) for c in plan.chunks for j in range(c.episodes)}
    assert sorted(meta["episode_id"]) == sorted(expected)  # every requested episode, exactly once
    real_ids = set(real.meta(["episode_id"])["episode_id"])
    assert (meta["source"] == "dream").all() and (meta["job_id"] == plan.job_id).all()
    assert (meta["world_model_id"] == plan.world_model_id).all() and (meta["sampler"] == plan.sampler.name).all()
    assert all(ref.split("@")[0] in real_ids for ref in meta["start_ref"])
    assert set(meta["ended"]) <= ENDED and np.isfinite(meta["disagreement_max"]).all()
    assert (meta["seed"] >= 0).all() and (meta["chunk_id"] >= 0).all() and (meta["matched_instruction"] != "").all()


@pytest.mark.integration
def test_generate_cli_writes_provenance_resolves_paraphrases_and_resumes_as_a_no_op(smoke_run, tmp_path):
    store_path = tmp_path / "dream.zarr"
    args = [*smoke_run["common"], f"generate.store={store_path}", "generate.workers=1",
            "generate.instructions=[open the drawer,{text: pull out the drawer, count: 3}]"]
    first = dreamgen("generate", *args, cwd=smoke_run["work"])
    store = TrajectoryStore.open(store_path)
    meta = store.meta()
    assert len(store) == 8 + 3
    para = meta["instruction"] == "pull out the drawer"
    assert para.sum() == 3 and (meta["task"] == "drawer-open-v3").all()
    assert (meta["matched_instruction"][para] == "pull the drawer out").all()
    assert ((meta["similarity"][para] > 0.6) & (meta["similarity"][para] < 1)).all() and not meta["novel"].any()
    assert (meta["kind"] == "expert").all() and all("oracle" in s for s in meta["sampler"])
    real_ids = set(TrajectoryStore.open(smoke_run["run_dir"] / "real.zarr").meta(["episode_id"])["episode_id"])
    assert all(ref.split("@")[0] in real_ids for ref in meta["start_ref"]) and (meta["seed"] >= 0).all()
    assert set(meta["ended"]) <= ENDED and len(set(meta["episode_id"])) == len(store)
    assert "1 Ray workers" in first.stderr + first.stdout
    digest = store.digest()
    # one run, whatever path names it: relative, through a symlink — the same job, resumed (nothing to do)
    (tmp_path / "link").symlink_to(smoke_run["run_dir"])
    relative = [a for a in args if not a.startswith("run_dir=")] + ["run_dir=link"]
    again = dreamgen("generate", *relative, cwd=tmp_path)
    assert "3 skipped" in again.stderr + again.stdout and TrajectoryStore.open(store_path).digest() == digest


@pytest.mark.integration
def test_generate_refuses_unknown_instructions_listing_the_closest_and_writes_nothing(smoke_run, tmp_path, capsys):
    store_path = tmp_path / "dream.zarr"
    out = dreamgen("generate", *smoke_run["common"], f"generate.store={store_path}",
                   "generate.instructions=[bake a cake]", cwd=smoke_run["work"], check=False)
    assert out.returncode == 2 and "bake a cake" in out.stderr and "closest known instructions" in out.stderr
    assert not store_path.exists()
    novel = dreamgen("generate", *smoke_run["common"], f"generate.store={store_path}", "generate.workers=0",
                     "generate.instructions=[{text: bake a cake, count: 2}]", "generate.allow_novel=true",
                     "generate.sampler.kind=random", cwd=smoke_run["work"])
    meta = TrajectoryStore.open(store_path).meta()
    assert novel.returncode == 0 and meta["novel"].all() and (meta["task"] == "").all() and len(meta["novel"]) == 2
    for bad, message in ((["generate.sampler.kind=policy", f"generate.sampler.policy={tmp_path / 'nope'}"],
                          "not a policy checkpoint"), (["generate.workers=-1"], "generate.workers=-1"),
                         (["generate.sampler.kind=greedy"], "accepted: expert, policy, random, risky, sb3")):
        code, err = in_process("generate", [*smoke_run["common"], f"generate.store={tmp_path / 'bad.zarr'}", *bad], capsys)
        assert code == 2 and message in err, err[-500:]
        assert not (tmp_path / "bad.zarr").exists()
    # one writer per store: while another process writes it, a second job is refused, naming the writer
    from dreamgen.data.store import writer_lock

    with writer_lock(tmp_path / "busy.zarr"):
        code, err = in_process("generate", [*smoke_run["common"], f"generate.store={tmp_path / 'busy.zarr'}",
                                            "generate.workers=0", "generate.sampler.kind=random"], capsys)
    assert code == 2 and f"is being written by another dreamgen process (pid {os.getpid()})" in err, err[-500:]
    assert not (tmp_path / "busy.zarr").exists()


@pytest.mark.integration
def test_a_worker_killed_mid_chunk_is_replaced_and_every_episode_lands_exactly_once(smoke_run, tmp_path):
    plan, model = smoke_plan(smoke_run)
    dims = {"obs_dim": model.layout.obs_dim, "action_dim": model.action_dim}
    reference = run_plan(plan, tmp_path / "in_process.zarr", workers=0, **dims)
    pool_seen, killed = [], []

    def kill_once(chunk, stats):
        if not killed:  # at the first commit both workers hold dispatched chunks: kill one of them
            pid = pool_seen[0].worker_info[0]["pid"]
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    totals = run_plan(plan, tmp_path / "ray.zarr", workers=2, on_chunk=kill_once, on_start=pool_seen.append, **dims)
    assert killed and totals["retries"] >= 1
    assert pool_seen[0].worker_info[0]["pid"] != killed[0]  # a fresh actor took over
    real = TrajectoryStore.open(smoke_run["run_dir"] / "real.zarr")
    ray_store, local_store = TrajectoryStore.open(tmp_path / "ray.zarr"), TrajectoryStore.open(tmp_path / "in_process.zarr")
    check_complete(ray_store, plan, real)
    assert ray_store.digest() == local_store.digest()  # same content as in-process, whoever ran which chunk
    assert reference["episodes"] == totals["episodes"] == plan.episodes


@pytest.mark.integration
@pytest.mark.slow  # a learning run of about a minute (make test-slow); the default suite keeps its 15-minute budget
def test_a_killed_generate_job_resumes_to_the_same_store_as_an_uninterrupted_run(smoke_run, tmp_path):
    args = [*smoke_run["common"], "generate.workers=1", "generate.episodes=6", "generate.episodes_per_chunk=2"]
    killed_store, clean_store = tmp_path / "killed.zarr", tmp_path / "clean.zarr"
    cmd = [sys.executable, "-m", "dreamgen.cli", "generate", *args, f"generate.store={killed_store}"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, cwd=smoke_run["work"], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    committed = 0
    while time.time() < deadline and proc.poll() is None:
        if (killed_store / "zarr.json").is_file():
            committed = len(TrajectoryStore.open(killed_store))
            if committed >= 2:
                break
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 2 <= committed < 12, f"kill landed outside the job ({committed} episodes committed)"
    partial = len(TrajectoryStore.open(killed_store))
    assert partial < 12 and partial % 2 == 0  # whole chunks only
    resumed = dreamgen("generate", *args, f"generate.store={killed_store}", cwd=smoke_run["work"])
    assert f"{partial // 2} already committed" in resumed.stderr + resumed.stdout
    dreamgen("generate", *args, f"generate.store={clean_store}", "generate.workers=0", cwd=smoke_run["work"])
    a, b = TrajectoryStore.open(killed_store), TrajectoryStore.open(clean_store)
    assert len(a) == 12 and len(set(a.meta(["episode_id"])["episode_id"])) == 12
    assert a.digest() == b.digest()



def test_a_policy_trained_in_the_dream_round_trips_through_its_checkpoint(tmp_path):
    from policies import load_policy
    from policies.sb3_dream import train_in_dream
    from tests.known_dynamics import POOL, LineModel

    model = LineModel()
    model.info = {"world_model_id": "wm-line"}
    policy = train_in_dream(model, POOL, ["go home", "go home too"], steps=256, envs=4, seed=0,
                            dream=DreamConfig(horizon=8))
    policy.save(tmp_path / "sb3")
    loaded = load_policy(tmp_path / "sb3")
    obs = np.random.default_rng(0).normal(size=(5, 2)).astype(np.float32)
    cond = np.eye(3, dtype=np.float32)[[0, 1, 0, 1, 0]]
    np.testing.assert_array_equal(policy.act(obs, cond), loaded.act(obs, cond))
    assert loaded.info["world_model_id"] == "wm-line" and loaded.info["instructions"] == ["go home", "go home too"]
    sampler = make_sampler(SamplerSpec("sb3", noise=0.0, checkpoint=str(tmp_path / "sb3")), "home",
                           np.random.default_rng(0), action_dim=2)
    np.testing.assert_array_equal(sampler.act(obs, cond), policy.act(obs, cond))


@pytest.mark.integration
def test_a_worker_that_cannot_load_fails_the_job_cleanly_and_leaves_no_store(smoke_run, tmp_path):
    from generation.service import GenerationError

    plan, model = smoke_plan(smoke_run)
    plan = dataclasses.replace(plan, start_store=str(tmp_path / "missing.zarr"))
    with pytest.raises((GenerationError, StoreError), match="missing.zarr"):
        run_plan(plan, tmp_path / "dream.zarr", workers=1, obs_dim=39, action_dim=4)
    assert not (tmp_path / "dream.zarr").exists()
