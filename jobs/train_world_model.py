"""``dreamgen train-world-model``: fit the ensemble on a store's real episodes → run_dir/world_model
(``world_model.kind=latent``: the latent model on an image store's frames, ``dreamgen.world_model.latent``).

Split by episode (train / val for early stopping, elites and the halting bound / test for fidelity),
train with a progress bar and ``wm/*`` metrics, write the checkpoint, then measure fidelity on the
held-out episodes and check the scripted expert inside the dream against the real simulator (when the
embodiment has both). The observation layout is the embodiment's; the checkpoint records its name.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from jobs.common import embodiment, hydra_main, log, plain, progress, run_verb


def ensemble_config(cfg: DictConfig):
    """The ``world_model`` section as an ``EnsembleConfig``, validated before anything starts."""
    from dreamgen.errors import ConfigError
    from dreamgen.world_model.ensemble import ACTIVATIONS, EnsembleConfig

    w = cfg.world_model
    checks = {"members": w.members >= 1, "elites": 1 <= w.elites <= w.members, "hidden": w.hidden >= 1,
              "layers": w.layers >= 1, "lr": w.lr > 0, "batch_size": w.batch_size >= 1,
              "max_epochs": w.max_epochs >= 1, "patience": w.patience >= 1,
              "activation": w.activation in ACTIVATIONS, "halt_quantile": 0 < w.halt_quantile <= 1,
              "val_fraction": 0 < w.val_fraction < 0.5, "test_fraction": 0 < w.test_fraction < 0.5,
              "action_history": isinstance(w.action_history, int) and 0 <= w.action_history <= 16}
    for name, ok in checks.items():
        if not ok:
            raise ConfigError(f"world_model.{name}={w[name]!r} is out of range (members, hidden, layers, "
                              "batch_size, max_epochs, patience >= 1; 1 <= elites <= members; lr > 0; "
                              f"activation in {sorted(ACTIVATIONS)}; 0 < halt_quantile <= 1; "
                              "0 < val_fraction, test_fraction < 0.5; 0 <= action_history <= 16)")
    if not (isinstance(w.gate_mm, int | float) and w.gate_mm > 0):
        raise ConfigError(f"world_model.gate_mm={w.gate_mm!r}; give a positive number of millimetres")
    return EnsembleConfig(members=w.members, elites=w.elites, hidden=w.hidden, layers=w.layers,
                          activation=w.activation, lr=w.lr, weight_decay=w.weight_decay,
                          batch_size=w.batch_size, max_epochs=w.max_epochs, patience=w.patience,
                          action_history=w.action_history, gate_mm=float(w.gate_mm))


def contact_gate(cfg: DictConfig, robot: Any, images: bool) -> tuple[int, int] | None:
    """``world_model.contact_gate`` as the dynamic dims it gates: the robot's part of that name (``auto``: its
    part named ``object`` if it has one; None: no gate, as for a model on camera latents); a part it lacks is
    refused, naming those it has."""
    from dreamgen.errors import ConfigError

    name = cfg.world_model.contact_gate
    if name == "auto":
        name = "object" if "object" in robot.parts else None
    if name is None or images:
        return None
    part, (lo, hi) = robot.parts.get(name), robot.layout.dynamic
    if part is None or not lo <= part.start < part.stop <= hi:
        movable = [p for p, s in robot.parts.items() if lo <= s.start < s.stop <= hi]
        raise ConfigError(f"world_model.contact_gate={name!r}; embodiment {robot.name}'s parts that it predicts: "
                          f"{', '.join(movable) or 'none'} (or auto, or null: no gate)")
    return part.start - lo, part.stop - lo


def model_kind(cfg: DictConfig):
    """``world_model.kind`` looked up in the registry of kinds, its own settings checked."""
    from dreamgen.world_model import kinds

    kind = kinds.get(str(cfg.world_model.kind))
    kind.check(plain(cfg.world_model))
    return kind


def safety_head(cfg: DictConfig, kind: Any, store: Any, episodes: list) -> tuple[tuple[str, ...], Any, list] | None:
    """``world_model.safety_head`` as ``(events, RiskConfig, replays)`` to train, or None when it is off; refused
    for a kind that cannot train one or a store without safety labels or without a single unsafe frame."""
    from dreamgen.errors import ConfigError
    from dreamgen.world_model.risk import RiskConfig

    h = plain(cfg.world_model.safety_head)
    enabled, replays = h.pop("enabled"), h.pop("replays")
    if not isinstance(enabled, bool):
        raise ConfigError(f"world_model.safety_head.enabled={enabled!r} must be true or false")
    try:
        config = RiskConfig(**h)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"world_model.safety_head: {exc}") from None
    if not enabled:
        return None
    if not kind.safety_head:
        raise ConfigError(f"world_model.safety_head.enabled=true: world-model kind {kind.name} has no safety head "
                          "(kind ensemble has)")
    if not store.events:
        raise ConfigError(f"world_model.safety_head.enabled=true needs safety labels, and world_model.store="
                          f"{store.path} has none; collect with safety.events set (the default: all), or set "
                          "world_model.safety_head.enabled=false")
    if not any(e.unsafe.any() for e in episodes):
        raise ConfigError(f"world_model.safety_head.enabled=true: world_model.store={store.path} has no unsafe frame "
                          f"among its {len(episodes)} real episodes (events {', '.join(store.events)}), so there is "
                          "nothing to learn; collect deliberately risky episodes too (collect.n_risky=10)")
    return tuple(store.events), config, audited_replays(replays, store) if replays is not None else []


def audited_replays(audit_dir: Any, store: Any, field: str = "world_model.safety_head.replays") -> list:
    """The real replays of an audit's ``fit``-fold dreams (``audit_dir/replays.zarr``, ``labels.json``), refused
    unless they carry the same safety events as ``store`` and come from the same robot."""
    from dreamgen.data.store import TrajectoryStore
    from dreamgen.errors import ConfigError
    from dreamgen.quality.audit import load_labels

    where = f"{field}={audit_dir}"
    path = Path(str(audit_dir))
    if not (path / "replays.zarr").is_dir():
        raise ConfigError(f"{where} holds no replays.zarr; give an audit's dir (audit.dir) whose `dreamgen audit` "
                          "ran with safety labels (safety.events), or set it to null")
    replays = TrajectoryStore.open(path / "replays.zarr")
    if replays.events != store.events or replays.info.get("embodiment") != store.info.get("embodiment"):
        raise ConfigError(f"{where}: its replays carry events {list(replays.events)} of robot "
                          f"{replays.info.get('embodiment')}, world_model.store has {list(store.events)} of "
                          f"{store.info.get('embodiment')}; audit dreams of this robot with the same safety.events")
    labels = load_labels(path / "labels.json")
    fit = {f"replay-{k}" for k, v in labels.items() if v.get("fold") == "fit"}
    return [e for e in replays.iter_episodes(images=False) if e.meta["episode_id"] in fit]


def dream_config(cfg: DictConfig):
    from dreamgen.dream.core import DreamConfig

    return DreamConfig(**cfg.dream)


def real_episodes(cfg: DictConfig, path: Any, robot: Any, field: str, images: bool) -> tuple[Any, list]:
    """The store at ``path`` (the setting ``field``) and its real episodes (all kinds: expert demos and play both
    teach dynamics), refused unless ``robot`` recorded it at its widths (``images``: with their camera frames,
    refusing a state store)."""
    from dreamgen.data.store import TrajectoryStore
    from dreamgen.errors import ConfigError

    store = TrajectoryStore.open(path)
    robot.check_recorded(store.info.get("embodiment"), f"{field}={path}")
    if store.obs_dim != robot.obs_dim or store.action_dim != robot.action_dim:
        raise ConfigError(f"{field}={path} holds {store.obs_dim}-dim observations and {store.action_dim}-dim "
                          f"actions; embodiment {robot.name} has {robot.obs_dim} and {robot.action_dim}")
    if images and store.cameras is None:
        raise ConfigError(f"world_model.kind={cfg.world_model.kind} needs camera images, and {field}="
                          f"{store.path} is a state store; collect one with camera.names set (e.g. "
                          "camera.names=[corner3]) or use world_model.kind=ensemble")
    return store, [e for e in store.iter_episodes(images=images) if e.meta["source"] == "real"]


def load_episodes(cfg: DictConfig, robot: Any, images: bool = False):
    """``world_model.store`` and its real episodes (``real_episodes``), at least 3 of them."""
    from dreamgen.errors import ConfigError

    store, episodes = real_episodes(cfg, cfg.world_model.store, robot, "world_model.store", images)
    if len(episodes) < 3:
        raise ConfigError(f"world_model.store={cfg.world_model.store} holds {len(episodes)} real episodes; "
                          "a world model needs at least 3 (train, val and test split by episode)")
    return store, episodes


def layout_of(episode: Any) -> tuple[str, Any]:
    """An episode's layout: its (task, seed), the start a real reset reproduces."""
    return str(episode.meta["task"]), episode.meta.get("seed")


def pretraining(cfg: DictConfig, robot: Any, episodes: list, images: bool) -> tuple[list, dict[str, Any] | None]:
    """``world_model.pretrain``'s real episodes (they join the training fold) and their provenance, or a refusal in
    one sentence: a store of another robot or widths, with no real episode, or holding a layout of the run's own
    store (one of those could be a held-out test episode the model then trained on)."""
    from dreamgen.errors import ConfigError

    path = cfg.world_model.pretrain
    if path is None:
        return [], None
    if not Path(str(path)).is_dir():
        raise ConfigError(f"world_model.pretrain={path} does not exist; give a store written by `dreamgen collect` "
                          "(e.g. collect.n_expert=0 collect.n_play=20 over the robot's tasks, with its own seed)")
    if Path(str(path)).resolve() == Path(str(cfg.world_model.store)).resolve():
        raise ConfigError(f"world_model.pretrain={path} is world_model.store itself; give another store")
    store, extra = real_episodes(cfg, path, robot, "world_model.pretrain", images)
    if not extra:
        raise ConfigError(f"world_model.pretrain={path} holds no real episode")
    own = {layout_of(e) for e in episodes}
    clash = next((e for e in extra if layout_of(e) in own), None)
    if clash is not None:
        raise ConfigError(f"world_model.pretrain={path}: episode {clash.meta['episode_id']} has the layout of "
                          f"world_model.store's ({clash.meta['task']}, seed {clash.meta.get('seed')}), which may be "
                          "held out for the fidelity report; collect the pretraining store with another seed=")
    tasks = sorted({e.meta["task"] for e in extra})
    return extra, {"store": str(store.path), "store_digest": store.digest(), "episodes": len(extra),
                   "transitions": int(sum(len(e) - 1 for e in extra)), "tasks": tasks}


def replay_episodes(cfg: DictConfig, store: Any, episodes: list, held_out: list,
                    images: bool = False) -> tuple[list, dict[str, Any] | None]:
    """``world_model.replays``: the real replays of an audit's fit-fold dreams (what the dreams' actions really did,
    with the real success labels: the negatives where the dream said success and reality did not), which join the
    training fold; a replay that starts from the layout of a held-out (val or test) episode is left out, so the
    fidelity report still scores layouts the model never trained on. Refused in one sentence: no replays there,
    another robot or safety labels, or a task the run's store does not have."""
    from dreamgen.errors import ConfigError

    path = cfg.world_model.replays
    if path is None:
        return [], None
    if images:
        raise ConfigError(f"world_model.replays={path}: world_model.kind={cfg.world_model.kind} learns from camera "
                          "frames, and an audit keeps its replays as states; use world_model.kind=ensemble")
    replays = audited_replays(path, store, "world_model.replays")
    tasks = {e.meta["task"] for e in episodes}
    stray = sorted({e.meta["task"] for e in replays} - tasks)
    if stray:
        raise ConfigError(f"world_model.replays={path} replays dreams of task(s) {', '.join(stray)}, which "
                          f"world_model.store does not have ({', '.join(sorted(tasks))}); give an audit of this run's "
                          "dreams")
    held = {layout_of(e) for e in held_out}
    kept = [e for e in replays if layout_of(e) not in held]
    return kept, {"dir": str(path), "episodes": len(kept), "left_out_held_out_layouts": len(replays) - len(kept),
                  "transitions": int(sum(len(e) - 1 for e in kept)),
                  "successes": int(sum(bool(e.success.any()) for e in kept)),
                  "per_task": {t: sum(e.meta["task"] == t for e in kept) for t in sorted(tasks)}}


def refuted_dreams(cfg: DictConfig, store: Any, episodes: list, held_out: list, kind: Any,
                   ) -> tuple[list, dict[str, Any] | None, dict[str, list]]:
    """``world_model.false_successes``: the dreams an audit refuted — the dream said success, the real replay of
    its actions did not succeed — in its ``fit`` fold, whose last ``world_model.false_success_steps`` dreamed
    states teach the success head "not a success" (and nothing else), with their provenance; and the audit's
    ``test``-fold dreams that said success, ``refuted`` and ``confirmed``, to score the trained head on (never
    trained on). A dream from the layout of a held-out (val or test) episode is left out. Refused in one sentence: no audit there, a dream store
    changed or gone since the audit, another robot, a task the run's store lacks, or a kind that cannot."""
    from dreamgen.data.store import TrajectoryStore
    from dreamgen.errors import ConfigError, StoreError
    from dreamgen.quality.audit import load_labels
    from dreamgen.world_model import kinds

    w = cfg.world_model
    if w.false_successes is None:
        return [], None, {}
    where = f"world_model.false_successes={w.false_successes}"
    steps = w.false_success_steps
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ConfigError(f"world_model.false_success_steps={steps!r}; must be an integer >= 1 (the dreamed states "
                          "before a refuted success that the success head learns from)")
    if not kind.head_negatives:
        able = ", ".join(k.name for k in kinds.KINDS if k.head_negatives)
        raise ConfigError(f"{where}: world_model.kind={kind.name} cannot learn from refuted dreams; kinds that can: "
                          f"{able}")
    path = Path(str(w.false_successes))
    if not (path / "audit.json").is_file() or not (path / "labels.json").is_file():
        raise ConfigError(f"{where} holds no audit (audit.json and labels.json); give the audit.dir of a "
                          "`dreamgen audit` run, or set it to null")
    audit = json.loads((path / "audit.json").read_text())
    try:
        dreams_store = TrajectoryStore.open(audit["store"])
        digest = dreams_store.digest()
    except (StoreError, OSError, KeyError) as exc:
        raise ConfigError(f"{where}: its dream store {audit.get('store')!r} cannot be read ({exc}); audit the "
                          "dreams again (`dreamgen audit`) where they are") from None
    if digest != audit.get("store_digest"):
        raise ConfigError(f"{where}: its dream store {audit['store']} changed since the audit (digest {digest}, "
                          f"audited {audit.get('store_digest')}); rerun `dreamgen audit` on it")
    if dreams_store.info.get("embodiment") != store.info.get("embodiment"):
        raise ConfigError(f"{where}: its dreams are of robot {dreams_store.info.get('embodiment')}, world_model.store "
                          f"of {store.info.get('embodiment')}; give an audit of this robot's dreams")
    labels = load_labels(path / "labels.json")
    said = {k: v for k, v in labels.items() if v.get("dream_success")}
    audited = {e.meta["episode_id"]: e for e in dreams_store.iter_episodes(images=False) if e.meta["episode_id"] in said}
    dreams = [e for k, e in audited.items() if said[k].get("fold") == "fit" and not said[k]["real_success"]]
    scored = {name: [e for k, e in audited.items() if said[k].get("fold") == "test" and said[k]["real_success"] == real]
              for name, real in (("refuted", False), ("confirmed", True))}
    tasks = {e.meta["task"] for e in episodes}
    stray = sorted({e.meta["task"] for e in audited.values()} - tasks)
    if stray:
        raise ConfigError(f"{where} refutes dreams of task(s) {', '.join(stray)}, which world_model.store does not "
                          f"have ({', '.join(sorted(tasks))}); give an audit of this run's dreams")
    held = {layout_of(e) for e in held_out}
    kept = [e for e in dreams if layout_of(e) not in held and len(e) > 1]
    return kept, {"dir": str(path), "dreams": len(kept), "left_out_held_out_layouts": len(dreams) - len(kept),
                  "steps": steps, "transitions": int(sum(min(steps, len(e) - 1) for e in kept)),
                  "per_task": {t: sum(e.meta["task"] == t for e in kept) for t in sorted(tasks)}}, scored


def refutation_report(model: Any, refutation: dict[str, Any] | None, scored: dict[str, list]) -> dict[str, Any] | None:
    """``world_model.false_successes``' provenance and the trained success heads where the audit's held-out (test
    fold) dreams ended as "success": how often they still fire on the refuted ones and on the confirmed ones."""
    from dreamgen.world_model.metrics import success_at_dream_ends

    if refutation is None:
        return None
    return {**refutation, "held_out": {name: success_at_dream_ends(model, dreams) for name, dreams in scored.items()}}


def layouts(episodes: list) -> list[list]:
    """The (task, seed) layouts of ``episodes``, sorted: what a checkpoint records it trained on, so a later
    fine-tune can refuse a run whose held-out episodes it has seen."""
    return sorted({layout_of(e) for e in episodes}, key=lambda ts: (ts[0], str(ts[1])))


def initial_model(cfg: DictConfig, robot: Any, kind: Any, store: Any, episodes: list) -> tuple[Any, dict | None]:
    """``world_model.init``: the checkpoint to fine-tune (one pretrained model, many fine-tunes) and its provenance,
    or a refusal in one sentence: no checkpoint there, a kind that cannot fine-tune, another kind, robot or layout,
    a model trained on world_model.store itself or on a layout of its episodes (the run's held-out test episodes
    would not be held out), or an instruction table that lacks one of the run's tasks."""
    from dreamgen.errors import ConfigError
    from dreamgen.world_model import kinds
    from dreamgen.world_model.checkpoint import CONFIG, load_world_model

    path = cfg.world_model.init
    if path is None:
        return None, None
    where = f"world_model.init={path}"
    if not (Path(str(path)) / CONFIG).is_file():
        raise ConfigError(f"{where} holds no world model ({CONFIG}); give the world_model dir of a `dreamgen "
                          "train-world-model` run, e.g. one trained on a play store (world_model.store=<play store>)")
    if not kind.fine_tunes:
        able = ", ".join(k.name for k in kinds.KINDS if k.fine_tunes)
        raise ConfigError(f"{where}: world_model.kind={kind.name} cannot fine-tune a checkpoint; kinds that can: {able}")
    model = load_world_model(path)
    if model.kind != kind.name:
        raise ConfigError(f"{where} is a {model.kind} model; this run trains world_model.kind={kind.name}")
    robot.check_recorded(model.info.get("embodiment"), where)
    if model.layout != robot.layout or model.action_dim != robot.action_dim:
        raise ConfigError(f"{where} predicts layout {model.layout.name} with {model.action_dim}-dim actions; "
                          f"embodiment {robot.name} has {robot.layout.name} with {robot.action_dim}")
    if model.info.get("store_digest") == store.digest():
        raise ConfigError(f"{where} was trained on world_model.store itself, so the run's held-out episodes may be in "
                          "its training fold; pretrain on another store (e.g. play collected with its own seed=)")
    seen = {(task, seed) for task, seed in model.info.get("layouts", [])}
    clash = next((e for e in episodes if layout_of(e) in seen), None)
    if clash is not None:
        raise ConfigError(f"{where} trained on the layout of world_model.store's episode {clash.meta['episode_id']} "
                          f"({clash.meta['task']}, seed {clash.meta.get('seed')}), which may be held out for the "
                          "fidelity report; pretrain on a store collected with another seed=")
    missing = sorted({e.meta["task"] for e in episodes} - set(model.instructions.tasks))
    if missing:
        raise ConfigError(f"{where}: its instruction table lacks task(s) {', '.join(missing)} of world_model.store "
                          f"(it knows {', '.join(sorted(set(model.instructions.tasks)))}); pretrain on a store "
                          "that covers the run's tasks")
    return model, {"path": str(path), "world_model_id": model.info["world_model_id"],
                   "store_digest": model.info.get("store_digest"), "pretrain": model.info.get("pretrain"),
                   "epochs": model.info.get("epochs"), "tasks": sorted(set(model.instructions.tasks))}


def split_run(cfg: DictConfig, episodes: list) -> tuple[list, list, list]:
    """The run's real episodes split by task into train, val and test (``world_model.val_fraction`` /
    ``test_fraction``), refused where no task has the 3 episodes a val and a test episode are held out from."""
    from dreamgen.errors import ConfigError
    from dreamgen.seeding import make_rng
    from dreamgen.world_model.fit import split_episodes

    w = cfg.world_model
    split = split_episodes([e.meta["task"] for e in episodes], (w.val_fraction, w.test_fraction),
                           make_rng(cfg.seed, "world-model-split"))
    train, val, test = ([episodes[i] for i in part] for part in split)
    if not val or not test:
        counts = {t: sum(e.meta["task"] == t for e in episodes) for t in sorted({e.meta["task"] for e in episodes})}
        raise ConfigError(f"world_model.store={cfg.world_model.store}: no task has the 3 real episodes a val and a "
                          f"test episode are held out from ({', '.join(f'{t} {n}' for t, n in counts.items())}); "
                          "collect more per task (collect.n_expert, collect.n_play)")
    return train, val, test


def instruction_table(episodes: list, init: Any) -> Any:
    """The instruction table of every phrasing ``episodes`` carry; fine-tuning (``init``), the pretrained rows stay
    where they are and the run's new phrasings are appended."""
    from dreamgen.language import default_encoder
    from dreamgen.world_model.base import InstructionTable

    texts = sorted({e.meta["instruction"] for e in episodes})
    task_of = {e.meta["instruction"]: e.meta["task"] for e in episodes}
    if init is None:
        return InstructionTable(texts, [task_of[t] for t in texts], default_encoder().encode(texts))
    new = [t for t in texts if t not in init.instructions.texts]
    return init.instructions.extended(new, [task_of[t] for t in new],
                                      default_encoder().encode(new) if new else np.zeros((0, init.cond_dim)))


def run(cfg: DictConfig) -> dict:
    from dreamgen.dream.rollout import check_expert_in_dream
    from dreamgen.rundir import staged, write_json
    from dreamgen.seeding import derive_seed
    from dreamgen.world_model.checkpoint import save_world_model
    from dreamgen.world_model.fit import transitions
    from dreamgen.world_model.kinds import FitRequest
    from dreamgen.world_model.metrics import (
        fidelity_report,
        flat_metrics,
        open_loop_strip,
        plot_episode,
        plot_reliability,
    )

    w, config, dream, robot = cfg.world_model, ensemble_config(cfg), dream_config(cfg), embodiment(cfg)
    kind = model_kind(cfg)
    config = dataclasses.replace(config, gate=contact_gate(cfg, robot, kind.images))
    store, episodes = load_episodes(cfg, robot, images=kind.images)
    risk = safety_head(cfg, kind, store, episodes)
    extra, pretrain = pretraining(cfg, robot, episodes, kind.images)
    init, started = initial_model(cfg, robot, kind, store, episodes)
    if init is not None:  # the checkpoint's architecture, history and gate; the run's training settings
        from dreamgen.world_model.fit import fine_tune_config

        config = fine_tune_config(init, config)
    train, val, test = split_run(cfg, episodes)
    replays, replayed = replay_episodes(cfg, store, episodes, val + test, kind.images)
    refuted, refutation, scored = refuted_dreams(cfg, store, episodes, val + test, kind)
    fit = train + extra + replays  # broad play and audited replays teach; val and test stay the run's own episodes
    table = instruction_table(episodes + extra + replays + refuted + [e for v in scored.values() for e in v], init)
    data = {name: transitions(part, robot.layout, table, config.action_history) for name, part in
            (("train", fit), ("val", val), ("test", test))}
    with run_verb(cfg, "train-world-model", inputs={"real": store}) as (run_dir, tracker):
        bar = progress(range(kind.epochs(plain(w))), cfg, desc="train-world-model", unit="epoch")

        def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
            bar.update(1)
            bar.set_postfix({k.removeprefix("wm/"): f"{v:.4f}" for k, v in metrics.items() if "val" in k})
            tracker.log_metrics(metrics, step=epoch)

        info = {"embodiment": robot.name, "store_digest": store.digest(), "seed": cfg.seed,
                "episodes": {name: [e.meta["episode_id"] for e in part]
                             for name, part in (("train", train), ("val", val), ("test", test))},
                "layouts": layouts(fit)}
        if pretrain is not None:
            info["pretrain"] = pretrain
        if started is not None:
            info["init"] = started
        if replayed is not None:
            info["replays"] = replayed
        if refutation is not None:
            info["false_successes"] = refutation
        model = kind.fit(FitRequest(fit, val, table, robot.layout, robot.parts, store.cameras, plain(w), config,
                                    cfg.seed, w.halt_quantile, info, on_epoch, risk, init,
                                    (refuted, refutation["steps"]) if refutation is not None else None))
        bar.close()
        with staged(run_dir / "world_model") as partial:
            world_model_id = save_world_model(model, partial)
            report = {"world_model_id": world_model_id, "kind": model.kind, "epochs": model.info["epochs"],
                      "transitions": {k: len(v) for k, v in data.items()}, "pretrain": pretrain,
                      "init": started, "replays": replayed,
                      "false_successes": refutation_report(model, refutation, scored),
                      "disagreement_bound": model.disagreement_bound,
                      "fidelity": fidelity_report(model, test, data["test"], tuple(w.fidelity_horizons),
                                                  parts=robot.parts)}
            plot_episode(model, max(test, key=len), partial / "fidelity.png", robot.parts)
            if report["fidelity"]["calibration"]:
                plot_reliability(report["fidelity"]["calibration"], partial / "reliability.png")
            if model.cameras is not None:  # the decoded frames of an open-loop dream above the real camera frames
                open_loop_strip(model, max(test, key=len), partial / "open_loop_strip.png")
            if risk is not None:  # the safety head on the held-out real episodes (never trained or calibrated on)
                from dreamgen.world_model.risk import audit

                report["safety_head"] = {"fit": model.risk.report, "held_out": audit(model, test),
                                         "replays": {"dir": cfg.world_model.safety_head.replays,
                                                     "episodes": len(risk[2]),
                                                     "unsafe_episodes": sum(bool(e.unsafe.any()) for e in risk[2])}}
                plot_reliability({f"risk ({e})": {"ece": v["ece"], "bins": v["bins"]}
                                  for e, v in report["safety_head"]["held_out"]["events"].items() if v["positives"]},
                                 partial / "risk_reliability.png", what="safety event")
            seeds = [derive_seed(cfg.seed, "world-model-check", i) for i in range(w.check_episodes)]
            own_tasks = sorted({e.meta["task"] for e in episodes})  # the run's, not the pretraining store's
            report["expert_in_dream"] = check_expert_in_dream(model, own_tasks, seeds, dream, robot) \
                if robot.has_simulator and robot.has_expert else {}
            write_json(partial / "report.json", report)
        metrics = flat_metrics(report["fidelity"])
        checks = report["expert_in_dream"].values()
        metrics.update({"wm/epochs": report["epochs"], "wm/disagreement_bound": model.disagreement_bound})
        if model.cameras is not None:
            tracker.log_artifact(run_dir / "world_model" / "open_loop_strip.png")
        if checks:
            metrics.update({"wm/expert_dream_success": float(np.mean([c["dream_success"] for c in checks])),
                            "wm/expert_replay_success": float(np.mean([c["real_success"] for c in checks])),
                            "wm/expert_agreement": float(np.mean([c["agreement"] for c in checks]))})
        tracker.log_metrics(metrics)
        tracker.log_dict(report, "world_model_report.json")
        tracker.log_artifact(run_dir / "world_model" / "fidelity.png")
        if report["fidelity"]["calibration"]:
            tracker.log_artifact(run_dir / "world_model" / "reliability.png")
        if "safety_head" in report:
            tracker.log_artifact(run_dir / "world_model" / "risk_reliability.png")
            for name, e in report["safety_head"]["held_out"]["events"].items():
                metrics.update({f"wm/risk/{name}/{k}": e[k] for k in ("auroc", "balanced_accuracy", "tpr_at_5fpr",
                                                                      "lead_median") if np.isfinite(e[k])})
        log.info("world model %s -> %s\n%s", world_model_id, run_dir / "world_model", format_report(report))
        return {"world_model": str(run_dir / "world_model"), "world_model_id": world_model_id, **metrics}


def format_report(report: dict) -> str:
    """A short human summary of the fidelity report and the expert-in-dream check."""
    from dreamgen.world_model.metrics import part_names

    one = report["fidelity"]["one_step"]
    lines = [f"one-step nMSE {one['nmse']:.4g} (copy baseline {one['copy_nmse']:.4g}) on {one['transitions']} "
             "held-out transitions"] if one else []
    if report.get("pretrain"):
        pre = report["pretrain"]
        lines.append(f"trained with {pre['episodes']} pretraining episodes ({pre['transitions']} transitions, "
                     f"{len(pre['tasks'])} tasks) of {pre['store']}; held out: the run's own episodes only")
    if report.get("init"):
        init = report["init"]
        lines.append(f"fine-tuned from {init['world_model_id']} ({init['path']}, {init['epochs']} epochs on "
                     f"{len(init['tasks'])} tasks) in {report['epochs']} epochs")
    if report.get("replays"):
        r = report["replays"]
        lines.append(f"trained with {r['episodes']} audited replays of {r['dir']} ({r['successes']} really succeed; "
                     f"{r['left_out_held_out_layouts']} left out: a held-out episode's layout)")
    if report.get("false_successes"):
        r = report["false_successes"]
        lines.append(f"success head taught 'not a success' by the last {r['steps']} dreamed states of {r['dreams']} "
                     f"refuted dreams of {r['dir']} ({r['left_out_held_out_layouts']} left out: a held-out layout)")
        for name, heads in r.get("held_out", {}).items():
            lines.extend(f"  {head} at the end of the audit's held-out {name} dreams: fires {h['fires']:.2f}, mean "
                         f"{h['mean']:.2f} ({h['dreams']} dreams)" for head, h in heads.items())
    for head, c in report["fidelity"].get("calibration", {}).items():
        lines.append(f"{head}: ECE {c['ece']:.3f}, precision {c['precision']:.2f} / recall {c['recall']:.2f} at 0.5 "
                     f"({c['predicted']} predicted, {c['positives']} real of {c['n']})")
    lines.append("open loop: mm, median / p90 (copy baseline median)")
    for horizon, e in sorted(report["fidelity"]["open_loop"].items(), key=lambda item: int(item[0])):
        if e["starts"]:
            image = f"   PSNR {e['psnr_db']['median']:.1f} dB ({e['psnr_copy_db']['median']:.1f})" if "psnr_db" in e else ""
            lines.append(f"  H={horizon:<4} " + "   ".join(
                f"{name} {e[f'{name}_mm']['median']:.1f} / {e[f'{name}_mm']['p90']:.1f} "
                f"({e[f'{name}_copy_mm']['median']:.1f})" for name in part_names(e)) + image + f"   ({e['starts']} starts)")
            if e.get("object_still_starts") or e.get("object_moved_starts"):
                lines.append(f"         object at rest drifts {e['object_still_drift']['median']:.1f} mm "
                             f"({e['object_still_starts']} starts); moved objects followed "
                             f"{e['object_moved_followed']:.2f} ({e['object_moved_starts']} starts)")
    if "safety_head" in report:
        held = report["safety_head"]["held_out"]
        lines.append(f"safety head on {held['frames']} held-out real frames (event within {held['horizon']} steps; "
                     f"unsure {held['unsure_share']:.2f}): AUROC, balanced accuracy, TPR@5%FPR, median lead (steps)")
        for name, e in held["events"].items():
            lines.append(f"  {name:24s} {e['auroc']:.3f}  {e['balanced_accuracy']:.3f}  {e['tpr_at_5fpr']:.3f}  "
                         f"{e['lead_median']:.0f}   ({e['positives']} positive frames, {e['onsets']} onsets)")
    if not report["expert_in_dream"]:
        return "\n".join(lines)
    lines.append("expert in the dream: task, dream success, replayed real success, agreement")
    for task, c in report["expert_in_dream"].items():
        lines.append(f"  {task:26s} {c['dream_success']:.2f}  {c['real_success']:.2f}  {c['agreement']:.2f}")
    return "\n".join(lines)


main = hydra_main(run)

if __name__ == "__main__":
    main()
