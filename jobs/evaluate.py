"""``dreamgen evaluate``: a policy on the real simulator, per-task success with Wilson 95% CIs — or, with
``evaluate.where=dream``, judged in the world model's dream (``dreamgen.judge``): per-task success over the
judged dreams with a bootstrap interval over starts and members, and the share left unjudged."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from jobs.common import check_policy, embodiment, goal_rules, hydra_main, log, progress, run_verb, safety


def check_config(cfg: DictConfig) -> list[str]:
    """The evaluated tasks; refuses bad ``evaluate.*`` values."""
    from dreamgen.errors import ConfigError

    e = cfg.evaluate
    robot = embodiment(cfg)
    tasks = robot.check_tasks(cfg.tasks)
    if e.where not in ("real", "dream"):
        raise ConfigError(f"evaluate.where={e.where!r}; accepted: real (the simulator), dream (judged in the world "
                          "model at evaluate.world_model)")
    if e.judge not in ("head", "rule"):
        raise ConfigError(f"evaluate.judge={e.judge!r}; accepted: head (evaluate.judge_head's probability), rule (the "
                          "task's own success criterion on the dreamed state)")
    if e.where == "dream" and by_rule(cfg):
        unknown = [task for task in tasks if robot.success_rule(task) is None]
        if unknown:
            raise ConfigError(f"evaluate.judge=rule: embodiment {robot.name} knows no success rule for task "
                              f"{unknown[0]!r}; use evaluate.judge=head, or tasks with a rule: "
                              f"{', '.join(t for t in robot.tasks if robot.success_rule(t) is not None) or 'none'}")
    if e.where == "real":
        safety(cfg, robot)  # safety.* refused before anything runs
        robot.require_simulator("evaluate", "judge the policy in the world model's dream (evaluate.where=dream), or "
                                            "measure it on the robot itself; dreamgen export gives the mix to train it on")
    if e.n_episodes < 1 or not 1 <= e.max_steps <= robot.max_steps:
        raise ConfigError(f"evaluate.n_episodes={e.n_episodes} must be >= 1 and evaluate.max_steps="
                          f"{e.max_steps} in [1, {robot.max_steps}] ({robot.name}'s episode limit)")
    if e.instructions not in ("canonical", "sampled"):
        raise ConfigError(f"evaluate.instructions={e.instructions!r}; accepted: canonical, sampled")
    if e.shield.enabled is not False:
        if e.shield.enabled is not True:
            raise ConfigError(f"evaluate.shield.enabled={e.shield.enabled!r} must be true or false")
        if e.where != "real":
            raise ConfigError("evaluate.shield.enabled=true shields a policy on the real simulator; with "
                              "evaluate.where=dream nothing real is at risk (set evaluate.where=real)")
    return tasks


def make_shield(cfg: DictConfig) -> Any:
    """``evaluate.shield`` as a ``dreamgen.shield.Shield`` (None when off), refused before anything runs when its
    world model is missing, of another robot, or has no safety head."""
    from dreamgen.errors import ConfigError
    from dreamgen.shield import Shield
    from dreamgen.world_model.checkpoint import load_world_model

    s = cfg.evaluate.shield
    if not s.enabled:
        return None
    if not Path(str(s.world_model), "world_model.json").is_file():
        raise ConfigError(f"evaluate.shield.world_model={s.world_model} holds no world model (world_model.json); "
                          "train one with world_model.safety_head.enabled=true")
    model, robot = load_world_model(s.world_model), embodiment(cfg)
    robot.check_recorded(model.info.get("embodiment"), f"evaluate.shield.world_model={s.world_model}")
    if not isinstance(s.rules, bool):
        raise ConfigError(f"evaluate.shield.rules={s.rules!r} must be true or false")
    if s.threshold is not None and not (isinstance(s.threshold, int | float) and 0 < s.threshold < 1):
        raise ConfigError(f"evaluate.shield.threshold={s.threshold!r} must be a probability in (0, 1), or null for "
                          "the safety head's own")
    try:
        return Shield(model, threshold=s.threshold, candidates=int(s.candidates), noise=float(s.noise),
                      seed=int(cfg.seed), rules=safety(cfg, robot) if s.rules else None)
    except ConfigError as exc:
        raise ConfigError(f"evaluate.shield ({s.world_model}): {exc}") from None


def by_rule(cfg: DictConfig) -> bool:
    """Whether a dream is judged by the task's own success rule: ``evaluate.judge=rule``, or a judging head that
    names the rule (``dream.success_head=rule``, which ``judge_head`` follows by default)."""
    return cfg.evaluate.judge == "rule" or cfg.evaluate.judge_head == "rule"


def goal_distances(cfg: DictConfig, config: Any) -> Any:
    """``planner.objective.goal`` / ``approach``: a function from rows' instruction embeddings to their tasks' goal
    distances (each embedding is one of the run's tasks' instructions, the nearest by cosine), or None when the
    objective has neither term; refused, before any episode, for a task whose success is no distance to a goal."""
    import numpy as np

    from dreamgen.language import default_encoder
    from dreamgen.plan.mppi import GoalDistance

    rules = goal_rules(cfg, cfg.tasks, config.objective)
    if rules is None:
        return None
    robot = embodiment(cfg)
    texts = [(task, text) for task in cfg.tasks for text in robot.tasks[task].instructions]
    table = default_encoder().encode([text for _, text in texts])
    table = table / np.linalg.norm(table, axis=1, keepdims=True)
    owners = [rules[task] for task, _ in texts]

    def goal_of(embeddings: np.ndarray) -> Any:
        nearest = np.argmax(np.asarray(embeddings, np.float32) @ table.T, axis=1)
        return GoalDistance.of([owners[i] for i in nearest])

    return goal_of


def mpc_policy(cfg: DictConfig) -> Any:
    """``policy.family=mpc``: MPC with the world model (and its prior policy) on the real simulator.

    Refuses, before any episode runs, a missing world model or prior, and a task the model never saw.
    """
    from dreamgen.errors import ConfigError
    from dreamgen.world_model.checkpoint import load_world_model
    from jobs.generate import planner_config
    from policies import load_policy
    from policies.samplers import make_mpc

    m = cfg.policy.mpc
    config = planner_config(cfg)
    model = load_world_model(m.world_model)
    embodiment(cfg).check_recorded(model.info.get("embodiment"), f"world model {m.world_model}")
    if model.cameras is not None:
        raise ConfigError(f"policy.family=mpc plans from the robot's state; {m.world_model} is a latent (camera) world "
                          "model, which plans only inside its own dreams (generate.sampler.kind=planner); give a "
                          "state world model (world_model.kind=ensemble)")
    unseen = [task for task in cfg.tasks if task not in set(model.instructions.tasks)]
    if unseen:
        raise ConfigError(f"policy.family=mpc: the world model {m.world_model} was never trained on task "
                          f"{unseen[0]!r}; it knows {sorted(set(model.instructions.tasks))} (set tasks= to those, or "
                          "train a world model on a store holding the task)")
    prior = None
    if config.prior_samples:
        if not m.prior:
            raise ConfigError(f"planner.prior_samples={config.prior_samples} needs policy.mpc.prior (a policy "
                              "checkpoint), or set planner.prior_samples=0")
        check_policy(cfg, m.prior, "policy.mpc.prior")
        prior = load_policy(m.prior)
        if getattr(prior, "reset", None) is not None:
            raise ConfigError(f"policy.mpc.prior={m.prior} is a {prior.kind} policy, which keeps per-episode "
                              "state (action chunks); the planner samples around a prior frame by frame: give "
                              "policy.family=bc")
    policy = make_mpc(model, config, prior, seed=int(cfg.seed), goal_of=goal_distances(cfg, config))
    policy.info.update(family="mpc", world_model=str(m.world_model), world_model_id=model.info["world_model_id"],
                       prior=str(m.prior) if prior is not None else None, planner=config.label())
    return policy


def load_evaluated(cfg: DictConfig) -> Any:
    """The policy ``evaluate`` runs: the checkpoint at ``evaluate.policy``, or what an evaluate-only family
    builds from the config (family=mpc: the planner; family=random: uniform actions)."""
    from policies import load_policy
    from policies.families import get

    family = get(cfg.policy.family)
    if family.plans:
        return mpc_policy(cfg)
    if family.make is not None:
        return family.make(cfg, embodiment(cfg))
    check_policy(cfg, cfg.evaluate.policy, "evaluate.policy")
    return load_policy(cfg.evaluate.policy)


def acting(policy: Any) -> Any:
    """``policy`` as ``dreamgen.evaluate.Act``: (obs, cond, rows, images) -> actions, deterministic."""
    stateful = hasattr(policy, "reset")  # keeps per-episode state (MPC: previous actions, warm plans)
    cameras = getattr(policy, "cameras", None)  # an image policy sees the world through its cameras

    def act(obs, cond, rows, images):
        if cameras is not None:
            return policy.act(obs, cond, images=images, deterministic=True)
        if stateful:
            return policy.act(obs, cond, deterministic=True, rows=rows)
        return policy.act(obs, cond, deterministic=True)

    return act


def evaluate_policy(cfg: DictConfig, policy: Any, on_task: Callable[[Any], None] | None = None, *,
                    model: Any = None) -> dict:
    """Success of ``policy`` per task (no tracking, no files): ``summarise``'s dict — on the real simulator, or
    judged in the dream (``evaluate.where=dream``: ``judge_policy``).

    Layout seeds derive from ``cfg.seed`` alone, so every policy evaluated under one run seed meets the
    same layouts (a paired comparison); seeds of ``evaluate.store``'s episodes are refused.
    """
    from dreamgen.data.store import TrajectoryStore
    from dreamgen.evaluate import evaluate_task, summarise
    from dreamgen.language import default_encoder

    e = cfg.evaluate
    tasks = check_config(cfg)
    if e.where == "dream":
        return judge_policy(cfg, policy, on_task, model=model)
    store = TrajectoryStore.open(e.store)
    train_seeds = {int(s) for s in store.meta(["seed"])["seed"] if s >= 0}
    encoder, robot = default_encoder(), embodiment(cfg)
    labels = safety(cfg, robot)
    stateful, act = hasattr(policy, "reset"), acting(policy)
    shield = make_shield(cfg)
    reset = policy.reset if stateful else None
    if shield is not None:
        act, policy_reset = shield.wrap(act), reset

        def reset(rows: int) -> None:
            shield.reset(rows)
            if policy_reset is not None:
                policy_reset(rows)

    results, shielded = [], {}
    for index, task in enumerate(tasks):
        result = evaluate_task(act, task, index, embodiment=robot, n_episodes=e.n_episodes, max_steps=e.max_steps,
                               run_seed=cfg.seed, embed=encoder.encode, instructions=e.instructions,
                               exclude_seeds=train_seeds, reset=reset,
                               cameras=getattr(policy, "cameras", None), safety=labels)
        results.append(result)
        if shield is not None:
            shielded[task] = shield.stats()
        if on_task is not None:
            on_task(result)
    summary = summarise(results)
    if shield is not None:
        checks, hits = sum(v["checks"] for v in shielded.values()), sum(v["interventions"] for v in shielded.values())
        summary["shield"] = {"world_model": str(e.shield.world_model), "world_model_id": shield.model.info.get(
            "world_model_id", ""), "threshold": shield.threshold, "tasks": shielded,
            "overall": {"checks": checks, "interventions": hits, "intervention_share": hits / checks if checks else 0.0,
                        "unresolved": sum(v["unresolved"] for v in shielded.values()),
                        "interventions_per_episode": hits / max(1, sum(r.episodes for r in results))}}
    return summary


def judging_model(cfg: DictConfig, policy: Any = None) -> Any:
    """The world model at ``evaluate.world_model``, refused (before any dream) when it was trained for
    another robot, lacks the judging head or a task, or cannot show an image policy its frames."""
    from dreamgen.errors import ConfigError
    from dreamgen.world_model.base import require_heads
    from dreamgen.world_model.checkpoint import load_world_model

    e = cfg.evaluate
    if not Path(str(e.world_model), "world_model.json").is_file():
        raise ConfigError(f"evaluate.world_model={e.world_model} holds no world model (world_model.json); train one "
                          "(dreamgen train-world-model) or point evaluate.world_model at its directory")
    model = load_world_model(e.world_model)
    embodiment(cfg).check_recorded(model.info.get("embodiment"), f"evaluate.world_model={e.world_model}")
    if not by_rule(cfg):
        require_heads(model, (e.judge_head,), "evaluate.judge_head")
    unseen = [task for task in cfg.tasks if task not in set(model.instructions.tasks)]
    if unseen:
        raise ConfigError(f"evaluate.where=dream: the world model {e.world_model} was never trained on task "
                          f"{unseen[0]!r}, so it cannot judge it; it knows {sorted(set(model.instructions.tasks))}")
    cameras = getattr(policy, "cameras", None)
    if cameras is not None:
        if model.cameras is None:
            raise ConfigError(f"evaluate.where=dream: the policy sees cameras, and the world model {e.world_model} "
                              "predicts no frames; judge an image policy with a latent world model "
                              "(world_model.kind=latent) trained on the same cameras")
        model.cameras.check_same(cameras, "the policy", "the judging world model")
    return model


def in_the_dream(cfg: DictConfig) -> DictConfig:
    """The same config with ``evaluate.where=dream`` (a sweep judges its arms both ways)."""
    out = cfg.copy()
    out.evaluate.where = "dream"
    out.evaluate.shield.enabled = False  # a shield guards real actions only
    return out


def judge_policy(cfg: DictConfig, policy: Any, on_task: Callable[[Any], None] | None = None, *,
                 model: Any = None) -> dict:
    """Success of ``policy`` per task judged in the world model's dream (``dreamgen.judge``): from the real
    evaluation's own layouts where the robot has a simulator (a paired comparison with ``where=real``), from
    the world model's held-out test episodes of ``evaluate.store`` where it has none."""
    from dreamgen.data.store import TrajectoryStore
    from dreamgen.dream.core import StartPool
    from dreamgen.evaluate import evaluation_instructions, evaluation_seeds
    from dreamgen.judge import held_out_starts, judge_task, summarise_dream
    from dreamgen.seeding import derive_seed
    from jobs.train_world_model import dream_config

    e = cfg.evaluate
    model, robot = model if model is not None else judging_model(cfg, policy), embodiment(cfg)
    store = TrajectoryStore.open(e.store)
    train_seeds = {int(s) for s in store.meta(["seed"])["seed"] if s >= 0}
    stateful, act = hasattr(policy, "reset"), acting(policy)
    config = dream_config(cfg)
    results = []
    for index, task in enumerate(check_config(cfg)):
        if robot.has_simulator:
            seeds = evaluation_seeds(cfg.seed, index, e.n_episodes, train_seeds)
            starts = StartPool.from_simulator(robot, task, seeds, model.cameras)
        else:
            starts = held_out_starts(store, model, task, e.n_episodes)
        texts = evaluation_instructions(robot.tasks[task].instructions, e.instructions, cfg.seed, index, len(starts.obs))
        known = set(model.instructions.texts)
        texts = [text if text in known else model.instructions.for_task(task) for text in texts]
        result = judge_task(act, task, starts, texts, model=model, max_steps=e.max_steps, config=config,
                            judge_head=e.judge_head, seed=derive_seed(cfg.seed, "evaluate/dream", index),
                            images=getattr(policy, "cameras", None) is not None,
                            reset=policy.reset if stateful else None,
                            rule=robot.success_rule(task) if by_rule(cfg) else None)
        results.append(result)
        if on_task is not None:
            on_task(result)
    judge = {"world_model": str(e.world_model), "world_model_id": model.info.get("world_model_id", ""),
             "head": f"the {robot.name} success rule" if by_rule(cfg) else f"head {e.judge_head}", "members": int(model.members), "halt": bool(config.halt),
             "starts": "simulator layouts" if robot.has_simulator else "the world model's held-out test episodes",
             "interval": "95% percentile bootstrap over starts and members"}
    return summarise_dream(results, judge=judge)


def run(cfg: DictConfig) -> dict:
    from dreamgen.data.store import TrajectoryStore
    from dreamgen.evaluate import format_table
    from dreamgen.rundir import write_json
    from policies import families

    e = cfg.evaluate
    tasks = check_config(cfg)
    policy = load_evaluated(cfg)
    judge = judging_model(cfg, policy) if e.where == "dream" else None  # refused before the run dir is touched
    make_shield(cfg)
    with run_verb(cfg, "evaluate", inputs={"real": TrajectoryStore.open(e.store)}) as (run_dir, tracker):
        bar = progress(None, cfg, total=len(tasks), desc="evaluate", unit="task")

        prefix = "dream" if e.where == "dream" else "policy"  # a dream's judgement is never logged as real success

        def on_task(result: Any) -> None:
            bar.update(1)
            tracker.log_metrics({f"{prefix}/success_rate/{result.task}": result.rate})

        summary = evaluate_policy(cfg, policy, on_task, model=judge)
        bar.close()
        summary["policy"] = policy.info if families.get(cfg.policy.family).fit is None else str(e.policy)
        write_json(run_dir / "eval.json", summary)
        tracker.log_dict(summary, "eval.json")
        overall = summary["overall"]
        tracker.log_metrics({f"{prefix}/success_rate": overall["success_rate"],
                             f"{prefix}/success_ci95_low": overall["ci95_low"],
                             f"{prefix}/success_ci95_high": overall["ci95_high"]})
        if "unsafe" in overall:  # safety violations on the real simulator (safety.*)
            tracker.log_metrics({"policy/unsafe_episodes": overall["unsafe"]["episodes_unsafe"],
                                 **{f"policy/unsafe_frames_per_episode/{k}": v
                                    for k, v in overall["unsafe"]["frames_per_episode"].items()}})
        if "shield" in summary:
            shield = summary["shield"]["overall"]
            tracker.log_metrics({"shield/interventions_per_episode": shield["interventions_per_episode"],
                                 "shield/intervention_share": shield["intervention_share"],
                                 "shield/unresolved": shield["unresolved"]})
            log.info("shield (%s, risk >= %.3f or unsure): %d interventions in %d checked steps (%d with no safe "
                     "candidate)", e.shield.world_model, summary["shield"]["threshold"], shield["interventions"],
                     shield["checks"], shield["unresolved"])
        if e.where == "dream":
            tracker.log_metrics({"dream/unjudged": overall["unjudged"]})
            log.info("success judged in the dream of %s (%s; %d starts per task x %d members; unjudged = halted "
                     "where the members disagree; NOT a real-robot measurement):\n%s", e.world_model, summary["judge"]["head"],
                     e.n_episodes, summary["judge"]["members"], format_table(summary))
        else:
            log.info("real-simulator success (%d episodes per task, seeds disjoint from training):\n%s",
                     e.n_episodes, format_table(summary))
        return summary


main = hydra_main(run)

if __name__ == "__main__":
    main()
