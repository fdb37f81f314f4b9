"""``dreamgen generate``: language-conditioned dreams from a world model into run_dir/dream.zarr, on Ray.

Resolves every instruction (refusing unknown ones unless ``allow_novel``), plans chunks with derived
seeds, then runs them on ``workers`` Ray actors (0 = in-process), committing each finished chunk
atomically. Rerunning the same command resumes: committed chunks are skipped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from jobs.common import (
    check_policy,
    embodiment,
    goal_rules,
    hydra_main,
    log,
    plain,
    progress,
    run_verb,
    stop_if_signalled,
)


def sb3_path(cfg: DictConfig) -> str:
    """Where this job's in-dream PPO policy lives: given, or keyed by everything its training depends on."""
    import hashlib
    import json

    g = cfg.generate
    if g.sampler.sb3.checkpoint:
        return str(g.sampler.sb3.checkpoint)
    from dreamgen.checkpoints import recorded_digest

    # keyed by the world model's content (its directory only before it exists: a pipeline's up-front check)
    model = recorded_digest(g.world_model, "world_model.json") or str(g.world_model)
    key = json.dumps([model, plain(g.instructions), g.sampler.sb3.steps, g.sampler.sb3.envs,
                      cfg.seed, plain(cfg.dream), list(cfg.tasks)], sort_keys=True)
    return f"{cfg.run_dir}/sb3_dream/ppo-{hashlib.sha256(key.encode()).hexdigest()[:10]}"


def checkpoint_id(cfg: DictConfig, checkpoint: str) -> str:
    """The sampler's checkpoint by content: its recorded digest; PPO trained in the dream by this job (not there
    yet when the job is planned) by the name its settings give it. "" without a checkpoint."""
    from dreamgen.checkpoints import recorded_digest

    if not checkpoint:
        return ""
    from policies.samplers import sampler_kind

    if sampler_kind(cfg.generate.sampler.kind).trains_in_dream and not cfg.generate.sampler.sb3.checkpoint:
        return Path(checkpoint).name
    digest = recorded_digest(checkpoint, "policy.json")
    return f"sha256:{digest}" if digest else f"missing:{Path(checkpoint).name}"


def planner_config(cfg: DictConfig):
    """The ``planner`` section as a checked ``PlannerConfig`` (a clear error names a bad field)."""
    from dreamgen.errors import ConfigError
    from dreamgen.plan.mppi import PlannerConfig

    values = plain(cfg.planner)
    ints = ("horizon", "samples", "prior_samples", "iterations", "elites")
    for name, value in values.items():
        if name == "objective":  # head -> weight, checked by PlannerConfig
            if isinstance(value, dict):
                values[name] = {str(k): float(v) if isinstance(v, int) and not isinstance(v, bool) else v
                                for k, v in value.items()}
            continue
        wanted = int if name in ints else str if name in ("propagation", "members") else float
        if wanted is float and isinstance(value, int) and not isinstance(value, bool):
            value = values[name] = float(value)
        if not isinstance(value, wanted) or isinstance(value, bool):
            raise ConfigError(f"planner.{name}={value!r}; must be {'an integer' if wanted is int else wanted.__name__}")
    known = {f.name for f in PlannerConfig.__dataclass_fields__.values()}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"planner.{unknown[0]} is not a planner setting; known: {', '.join(sorted(known))}")
    return PlannerConfig(**values)


def sampler_spec(cfg: DictConfig):
    from dreamgen.errors import ConfigError
    from policies.samplers import SamplerSpec, sampler_kind

    s = cfg.generate.sampler
    kind = sampler_kind(s.kind)
    planner = planner_config(cfg) if kind.plans else None
    steps = plain(s.recovery.steps)
    if not (isinstance(steps, list) and len(steps) == 2 and all(isinstance(x, int) for x in steps)):
        raise ConfigError(f"generate.sampler.recovery.steps={steps!r}; give [lo, hi], two integers with 0 <= lo <= hi")
    checkpoint = kind.checkpoint(s.policy, planner, lambda: sb3_path(cfg))
    options = kind.options(plain(s.get(kind.name))) if kind.defaults else ()
    return SamplerSpec(kind=s.kind, noise=s.noise, checkpoint=checkpoint, checkpoint_id=checkpoint_id(cfg, checkpoint),
                       planner=planner, options=options,
                       recovery_steps=tuple(steps), recovery_noise=float(s.recovery.noise),
                       recovery_track=float(s.recovery.track), retarget_track=float(s.retarget.track))


def train_sb3_sampler(cfg: DictConfig, plan, model, tracker) -> None:
    """Train PPO inside the dream on the plan's instructions (once: a finished policy is reused)."""
    from dreamgen.data.store import TrajectoryStore
    from dreamgen.dream.core import StartPool
    from dreamgen.rundir import staged
    from policies.sb3_dream import train_in_dream

    path = Path(plan.sampler.checkpoint)
    if (path / "policy.json").is_file():
        log.info("sb3 sampler: reusing %s", path)
        return
    s = cfg.generate.sampler.sb3
    model.instructions = plan.instruction_table(model.instructions)
    pool = StartPool.from_store(TrajectoryStore.open(plan.start_store))
    log.info("sb3 sampler: PPO for %d dream steps on %d instructions -> %s", s.steps, len(plan.requests), path)
    policy = train_in_dream(model, pool, [r.instruction for r in plan.requests], steps=s.steps, envs=s.envs,
                            seed=cfg.seed, dream=plan.dream)
    with staged(path) as partial:
        policy.save(partial)
    tracker.log_metrics({"generate/sb3_steps": float(s.steps)})


def check_config(cfg: DictConfig) -> None:
    """Every ``generate`` value that can be checked before loading anything."""
    from dreamgen.errors import ConfigError

    g = cfg.generate
    for name in ("episodes", "envs_per_worker", "episodes_per_chunk"):
        if not isinstance(g[name], int) or g[name] < 1:
            raise ConfigError(f"generate.{name}={g[name]!r}; must be an integer >= 1")
    if not isinstance(g.workers, int) or g.workers < 0:
        raise ConfigError(f"generate.workers={g.workers!r}; must be an integer >= 0 (0 = in this process)")
    from policies.samplers import sampler_kind

    trains = sampler_kind(g.sampler.kind).trains_in_dream
    if trains and not g.sampler.sb3.checkpoint and (g.sampler.sb3.steps < 1 or g.sampler.sb3.envs < 1):
        raise ConfigError(f"generate.sampler.sb3.steps={g.sampler.sb3.steps} and .envs={g.sampler.sb3.envs}; "
                          "both must be >= 1 (or give generate.sampler.sb3.checkpoint)")
    if g.max_retries < 0:
        raise ConfigError(f"generate.max_retries={g.max_retries}; must be >= 0")
    sampler_spec(cfg)


def check_instructions(cfg: DictConfig, tasks: tuple[str, ...]):
    """``generate.instructions`` resolved to requests over ``tasks`` (the world model's), or a refusal."""
    from dreamgen.language import make_resolver
    from generation.plan import parse_entries, resolve_requests

    g, robot = cfg.generate, embodiment(cfg)
    texts = plain(g.instructions) or [robot.tasks[task].instructions[0] for task in robot.check_tasks(cfg.tasks)]
    entries = parse_entries(texts, g.episodes)
    resolver = make_resolver(robot.tasks, min_similarity=cfg.language.min_similarity,
                             ambiguity_margin=cfg.language.ambiguity_margin)
    return resolve_requests(entries, resolver, tasks, allow_novel=g.allow_novel)


def check_rule(cfg: DictConfig, requests: Any) -> None:
    """``dream.success_head=rule``: dreams end by their task's own success criterion, so every requested task
    needs one (a novel instruction has no task, so no rule); likewise a planner sampler whose objective has a
    known cost (``planner.objective.goal`` / ``approach``) needs each task's goal distance."""
    if sampler_spec(cfg).planner is not None:
        goal_rules(cfg, {r.task for r in requests}, planner_config(cfg).objective)
    robot = embodiment(cfg)
    if cfg.dream.success_head == "rule":  # dreams end by their task's own criterion: every task needs one
        from dreamgen.errors import ConfigError

        missing = sorted({r.task or "(a novel instruction)" for r in requests if not r.task or robot.success_rule(r.task) is None})
        if missing:
            raise ConfigError(f"dream.success_head=rule: embodiment {robot.name} knows no success rule for {missing[0]}; "
                              f"name a head (dream.success_head=success) or dream tasks with a rule: "
                              f"{', '.join(t for t in robot.tasks if robot.success_rule(t) is not None) or 'none'}")


def build_plan(cfg: DictConfig) -> tuple[Any, Any, Any]:
    """Resolve instructions, load the world model's id and tasks, open the start store (its content digest
    is part of the job id) and plan the chunks: ``(plan, world model, start store)``."""
    from dreamgen.data.store import TrajectoryStore
    from dreamgen.language import default_encoder
    from dreamgen.world_model.checkpoint import load_world_model
    from generation.plan import make_plan, require_known
    from jobs.train_world_model import dream_config

    g, robot = cfg.generate, embodiment(cfg)
    check_config(cfg)
    requests = check_instructions(cfg, tuple(robot.tasks))  # refuse what no world model could dream before loading one
    check_rule(cfg, requests)
    model = load_world_model(g.world_model)
    robot.check_recorded(model.info.get("embodiment"), f"world model {g.world_model}")
    require_known(requests, model.instructions.tasks)
    start = TrajectoryStore.open(g.start_store)  # fail now if the start states are missing
    embeddings = default_encoder().encode([r.instruction for r in requests])
    plan = make_plan(requests=requests, embeddings=embeddings, world_model=str(g.world_model),
                     world_model_id=model.info["world_model_id"], start_store=str(g.start_store),
                     start_store_digest=start.digest(), sampler=sampler_spec(cfg), dream=dream_config(cfg), envs=g.envs_per_worker,
                     episodes_per_chunk=g.episodes_per_chunk, seed=cfg.seed, embodiment=robot)
    return plan, model, start


def check_inputs(cfg: DictConfig) -> None:
    """What must exist when generation starts (not when a pipeline starts: earlier stages write it)."""
    from dreamgen.errors import ConfigError
    from policies import families, policy_facts
    from policies.samplers import sampler_kind

    s = cfg.generate.sampler
    spec, kind = sampler_spec(cfg), sampler_kind(cfg.generate.sampler.kind)
    # the checkpoint the kind reads, where the user gave it (PPO the job trains in the dream is not there yet)
    given = (kind.policy_setting, s.sb3.checkpoint if kind.trains_in_dream else spec.checkpoint) \
        if kind.policy_setting else None
    if given and given[1] and not (Path(str(given[1])) / "policy.json").is_file():
        raise ConfigError(f"{given[0]}={given[1]}: not a policy checkpoint (no policy.json); train one "
                          "(`dreamgen train-policy`, or leave sb3.checkpoint null to train PPO in the dream)")
    if given and given[1]:
        family = families.FAMILIES.find((policy_facts(given[1]) or {}).get("kind"))
        if family is not None and family.images:
            raise ConfigError(f"{given[0]}={given[1]} is an image policy (policy.family={family.name}); samplers act "
                              "on the dream's state: give a state policy (policy.family=bc)")
        if family is not None and family.episodic:
            raise ConfigError(f"{given[0]}={given[1]} is a {family.name} policy, which acts in action chunks kept "
                              "per episode; samplers ask a policy frame by frame on rows they perturb: give "
                              "policy.family=bc")
        # trained for this robot; a PPO checkpoint where one is asked for (its dreams say sb3)
        check_policy(cfg, given[1], given[0], kinds=(kind.policy_family,) if kind.policy_family else ())


def run(cfg: DictConfig) -> dict:
    from dreamgen.data.store import TrajectoryStore
    from dreamgen.rundir import check_run_dir
    from generation.service import run_plan
    from jobs.common import identity
    from policies.samplers import SAMPLERS, sampler_kind

    g = cfg.generate
    check_run_dir(cfg.run_dir, identity(cfg))  # before loading anything
    check_inputs(cfg)
    plan, model, real = build_plan(cfg)
    if model.cameras is not None:  # a latent model starts from the start store's camera frames
        model.cameras.check_same(real.cameras, f"generate.start_store={g.start_store}", f"world model {g.world_model}")
    kind = sampler_kind(plan.sampler.kind)
    if model.cameras is not None and kind.state_only:
        from dreamgen.errors import ConfigError

        usable = ", ".join(k.name for k in SAMPLERS if not k.state_only)
        raise ConfigError(f"generate.sampler.kind={kind.name} acts in a state dream only ({kind.summary}); with a "
                          f"latent (camera) world model use {usable}")
    with run_verb(cfg, "generate", inputs={"real": real}) as (run_dir, tracker):
        for r in plan.requests:
            flag = " NOVEL (zero-shot)" if r.novel else ""
            log.info("%5d x %r -> %s via %r (similarity %.2f)%s", r.count, r.instruction, r.task or "-",
                     r.matched, r.similarity, flag)
        if kind.trains_in_dream:
            train_sb3_sampler(cfg, plan, model, tracker)
        bar = progress(None, cfg, total=plan.episodes, desc="generate", unit="ep")

        def on_chunk(chunk, stats) -> None:
            bar.update(stats["episodes"])
            stop_if_signalled()  # the chunk is committed

        totals = run_plan(plan, g.store, workers=g.workers, obs_dim=model.layout.obs_dim,
                          action_dim=model.action_dim, cameras=model.cameras, address=g.address, max_retries=g.max_retries,
                          on_chunk=on_chunk)
        bar.close()
        store = TrajectoryStore.open(g.store)
        run_s = max(totals["seconds"] - totals.get("startup_s", 0.0), 1e-9)
        metrics = {f"generate/{k}": float(totals.get(k, 0)) for k in
                   ("episodes", "transitions", "success", "halted", "nonfinite", "horizon", "retries",
                    "chunks_run", "chunks_skipped")}
        metrics.update({"generate/episodes_per_s": totals.get("episodes", 0) / run_s,
                        "generate/transitions_per_s": totals.get("transitions", 0) / run_s,
                        "generate/store_episodes": float(len(store))})
        tracker.log_metrics(metrics)
        tracker.log_dict(plan.summary(), "generation_plan.json")
        tracker.log_dataset(store.path, name="dream", digest=store.digest(), context="generated")
        log.info("dream store %s: %d episodes (job %s, %d chunks run, %d skipped, %d retried); "
                 "%.1f episodes/s, %.0f transitions/s; ended: %d success, %d halted, %d non-finite",
                 g.store, len(store), plan.job_id, totals["chunks_run"], totals["chunks_skipped"],
                 totals["retries"], metrics["generate/episodes_per_s"], metrics["generate/transitions_per_s"],
                 totals.get("success", 0), totals.get("halted", 0), totals.get("nonfinite", 0))
        return {"store": str(g.store), "job_id": plan.job_id, "digest": store.digest(), **metrics}


main = hydra_main(run)

if __name__ == "__main__":
    main()
