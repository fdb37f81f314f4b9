"""What every verb shares: config → plain values, the run directory, the MLflow run, clean errors."""

from __future__ import annotations

import errno
import functools
import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from dreamgen.errors import DreamgenError
from dreamgen.rundir import open_run_dir

log = logging.getLogger("dreamgen")
USER_ERRNOS = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT)  # the disk, not dreamgen

# Keys that may change between verbs of one run without making it a different run.
# ``generate`` is one of them: each generation job is identified by its own job id in its dream store;
# the quality model, filter and audit record what they read (store digests, thresholds) themselves;
# each sweep arm is its own run dir with its own identity; the planner's settings are part of each
# generation job's id and of each MPC evaluation's report; ``pipeline`` records its settings in its own
# stage ledger.
NON_IDENTITY_KEYS = ("run_dir", "tracking", "progress", "export", "generate", "audit", "quality", "filter",
                     "sweep", "planner", "pipeline")


# The one place that picks an embodiment (``dreamgen.sim.base.Embodiment``): ``embodiment=<name>``.
# ``data`` is a robot without a simulator, described by its LeRobotDataset (``data_robot``).
EMBODIMENTS = {"metaworld": ("dreamgen.sim.metaworld", "METAWORLD"), "fetch": ("dreamgen.sim.fetch", "FETCH"),
               "data": ("jobs.common", "data_robot")}


def embodiment(cfg: DictConfig) -> Any:
    """The robot and real world this run is about (config key ``embodiment``), or a refusal naming the
    embodiments there are."""
    import importlib

    from dreamgen.errors import ConfigError
    from dreamgen.sim.base import Embodiment

    name = cfg.embodiment
    if name not in EMBODIMENTS:
        raise ConfigError(f"embodiment={name!r} is not an embodiment; accepted: {', '.join(EMBODIMENTS)}")
    module, attribute = EMBODIMENTS[name]
    found = getattr(importlib.import_module(module), attribute)
    return found if isinstance(found, Embodiment) else found(cfg)


def safety(cfg: DictConfig, robot: Any = None) -> Any:
    """``safety.*`` checked against the robot's events (``dreamgen.safety.SafetySpec``; None: no events)."""
    from omegaconf import OmegaConf

    from dreamgen.safety import safety_spec

    section = cfg.get("safety")
    return safety_spec(OmegaConf.to_container(section) if section is not None else None, robot or embodiment(cfg))


def cameras(cfg: DictConfig, robot: Any = None) -> Any:
    """The cameras this run renders (``camera.names`` at ``camera.size``), or None: state only."""
    camera = cfg.get("camera") or {}
    return (robot or embodiment(cfg)).camera_config(list(camera.get("names") or []), camera.get("size", 64))


def data_robot(cfg: DictConfig) -> Any:
    """``embodiment=data``: the robot written into the real store (``world_model.store``) at import, or —
    before the import — the one its LeRobotDataset (``collect.import_root``) describes with ``robot.*``."""
    from dreamgen.data.store import TrajectoryStore
    from dreamgen.errors import ConfigError
    from dreamgen.sim.data import DataRobot, recorded

    store = Path(str(cfg.world_model.store))
    if (store / "zarr.json").is_file():
        return recorded(TrajectoryStore.open(store).info, f"world_model.store={store}")
    if not cfg.collect.import_root:
        raise ConfigError("embodiment=data is a robot described by its data: import its LeRobotDataset first "
                          f"(`dreamgen collect embodiment=data collect.import_root=...`); {store} does not exist")
    from dreamgen.data.lerobot_io import describe_lerobot

    seen = describe_lerobot(cfg.collect.import_root, repo_id=cfg.collect.import_repo_id,
                            obs_key=cfg.collect.import_obs_key)
    r = cfg.robot
    return DataRobot(r.name, seen["obs_dim"], seen["action_dim"], seen["tasks"],
                     max_steps=int(r.max_steps or seen["longest"]), fps=seen["fps"], robot_type=seen["robot_type"],
                     static_dims=r.static_dims, parts=plain(r.parts))


def goal_rules(cfg: DictConfig, tasks: Any, objective: Any) -> dict[Any, Any] | None:
    """For the known costs (``planner.objective.goal`` / ``approach``) in ``objective``: each task's goal rule, or
    None when there are none; refused, in one sentence, for a task without a goal distance (a
    None task is a novel instruction, which has none)."""
    from dreamgen.errors import ConfigError
    from dreamgen.plan.mppi import KNOWN_COSTS

    terms = [term for term in KNOWN_COSTS if term in (objective or {})]
    if not terms:
        return None
    robot = embodiment(cfg)
    rules = {task: robot.goal_rule(task) if task else None for task in tasks}
    missing = sorted((task is not None, str(task)) for task, rule in rules.items() if rule is None)
    if missing:
        what = (f"{missing[0][1]} (its success is not a part reaching a goal)" if missing[0][0]
                else "a novel instruction (it names no task)")
        have = ", ".join(t for t in robot.tasks if robot.goal_rule(t) is not None) or "none"
        raise ConfigError(f"planner.objective.{terms[0]}: embodiment {robot.name} knows no goal distance for {what}; "
                          f"tasks with one: {have}, or drop the term (~planner.objective.{terms[0]})")
    return rules


def check_policy(cfg: DictConfig, path: Any, what: str, kinds: tuple[str, ...] = ()) -> None:
    """Refuse, before it is loaded, a policy checkpoint trained for another embodiment (recorded, or seen from
    the observation size it acts on) or, with ``kinds``, of another kind."""
    from dreamgen.errors import ConfigError
    from policies import policy_facts

    facts = policy_facts(path)
    if facts is None:
        return  # unreadable: loading it names the problem
    robot = embodiment(cfg)
    if facts["embodiment"]:
        robot.check_recorded(facts["embodiment"], f"{what}={path}")
    dim, want = facts["obs_dim"], robot.layout.obs_dim
    if dim and (dim != want if facts["exact_obs"] else dim > want):
        raise ConfigError(f"{what}={path} acts on {dim}-dim observations; embodiment {robot.name}'s are {want} "
                          f"({robot.layout.name}); give a policy trained for {robot.name}")
    if kinds and facts["kind"] not in kinds:
        raise ConfigError(f"{what}={path} is a {facts['kind']!r} policy; this needs kind {' or '.join(kinds)}")


def plain(node: Any) -> Any:
    """A resolved DictConfig/ListConfig node as plain Python containers."""
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def identity(cfg: DictConfig) -> dict[str, Any]:
    """What makes two invocations the same run: the unresolved config minus ``NON_IDENTITY_KEYS``."""
    raw = OmegaConf.to_container(cfg, resolve=False)
    assert isinstance(raw, dict)
    return {k: v for k, v in raw.items() if k not in NON_IDENTITY_KEYS}


@contextmanager
def run_verb(cfg: DictConfig, verb: str, *, inputs: dict[str, Any] | None = None) -> Iterator[tuple[Path, Any]]:
    """Enter the run dir (checked first), save the resolved config, and open the verb's MLflow run.

    ``inputs`` maps a dataset name to an open ``TrajectoryStore`` logged as lineage (``mlflow.log_input``).
    """
    from dreamgen import tracking

    tracking.check_uri(cfg.tracking.uri)  # seconds, before the run dir is touched
    with open_run_dir(cfg.run_dir, identity(cfg)) as run_dir:
        config_yaml = OmegaConf.to_yaml(cfg, resolve=True)
        (run_dir / "configs").mkdir(exist_ok=True)
        (run_dir / "configs" / f"{verb}.yaml").write_text(config_yaml)
        with tracking.start_run(
            cfg.tracking.uri, cfg.tracking.experiment, f"{cfg.name}/{verb}", config_yaml=config_yaml,
            params=plain(cfg), tags={"dreamgen.verb": verb, "dreamgen.run_dir": str(run_dir.resolve())},
        ) as tracker:
            for name, store in (inputs or {}).items():
                tracker.log_dataset(store.path, name=name, digest=store.digest(), context="training")
            yield run_dir, tracker


def check_settings(cfg: DictConfig) -> None:
    """Every setting's type against its default (``dreamgen.settings``), before anything is read or written."""
    from omegaconf.errors import OmegaConfBaseException

    from dreamgen.errors import ConfigError
    from dreamgen.language import check_resolver_settings
    from dreamgen.settings import check_types

    try:
        values = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as exc:  # e.g. an interpolation naming a key that does not exist
        raise ConfigError(f"{getattr(exc, 'full_key', '') or 'config'}: {str(exc).splitlines()[0]}") from exc
    assert isinstance(values, dict)
    check_types(values)
    check_resolver_settings(cfg.language.min_similarity, cfg.language.ambiguity_margin)
    check_robot_section(cfg, values)


def check_robot_section(cfg: DictConfig, values: dict[str, Any]) -> None:
    """``robot.*`` describes a robot known only from its data (``embodiment=data``); given with another
    embodiment it would be ignored without a word, so it is refused."""
    from dreamgen.errors import ConfigError
    from dreamgen.settings import DEFAULTS

    if cfg.embodiment == "data" or "robot" not in values:
        return
    default = OmegaConf.to_container(OmegaConf.load(DEFAULTS).robot, resolve=False)
    assert isinstance(default, dict)
    changed = [k for k, v in values["robot"].items() if default.get(k) != v]
    if changed:
        raise ConfigError(f"robot.{changed[0]}={values['robot'][changed[0]]!r} describes a robot known from its data "
                          f"(embodiment=data); embodiment={cfg.embodiment} has its own layout and tasks, so drop "
                          "robot.* or set embodiment=data")


def canonical_run_dir(cfg: DictConfig) -> None:
    """One run, whatever path names it: ``run_dir`` becomes its absolute, symlink-free path, so every path
    derived from it (stores, checkpoints, sweep arms) is the same whether the run dir was given relative,
    absolute or through a symlink, here or via ``submit``. (No id depends on a path: ids come from content.)"""
    from omegaconf import open_dict

    from dreamgen.errors import ConfigError

    if not isinstance(cfg.run_dir, str) or not cfg.run_dir.strip():
        raise ConfigError(f"run_dir={cfg.run_dir!r}; give a directory path")
    with open_dict(cfg):
        cfg.run_dir = str(Path(cfg.run_dir).expanduser().resolve())


_SIGNALLED: list[int] = []  # termination signals received during the current verb


def _terminate(signum: int, frame: Any) -> None:
    """SIGINT and SIGTERM: unwind like Ctrl-C (every ``finally`` and ``staged`` cleans up on the way out)."""
    _SIGNALLED.append(signum)
    # A library that catches the interrupt mid-call logs it as its own error, traceback and all (MLflow's
    # database layer does, landing in a SQLite write); from here on such reports are the interruption, not
    # errors, and the one line below is what the user reads.
    logging.disable(logging.ERROR)
    raise KeyboardInterrupt(f"signal {signum}")


def stop_if_signalled() -> None:
    """Raise the interruption here if a termination signal came and its ``KeyboardInterrupt`` was swallowed.

    Python runs a signal handler between any two bytecodes — also inside a finalizer (``__del__``, a
    weakref callback) or a library's broad ``except``, where the exception is printed as "ignored" or
    dropped and the verb would run on to exit 0. Called where committed work ends (after each pipeline
    stage, generation chunk and sweep arm, and when the verb returns), so a signal is never lost.
    """
    if _SIGNALLED:
        raise KeyboardInterrupt(f"signal {_SIGNALLED[0]}")


def entrypoint(run: Callable[[DictConfig], Any]) -> Callable[[DictConfig], None]:
    """Wrap a verb: a ``DreamgenError`` (or a user's file-system mistake) becomes one line on stderr and exit
    code 2; SIGINT and SIGTERM unwind like Ctrl-C, so every stage removes its partial output."""

    @functools.wraps(run)
    def main(cfg: DictConfig) -> None:
        import signal

        before = {sig: signal.signal(sig, _terminate) for sig in (signal.SIGINT, signal.SIGTERM)}
        unraisable = sys.unraisablehook
        sys.unraisablehook = functools.partial(_quiet_interrupts, unraisable)
        _SIGNALLED.clear()
        try:
            check_settings(cfg)
            canonical_run_dir(cfg)
            run(cfg)
            stop_if_signalled()
        except BaseException as exc:
            # An interrupt can surface as another error: landing inside a library call (a database write of
            # MLflow's), the KeyboardInterrupt becomes that library's error on the way out. Any Exception
            # raised after a termination signal is the interruption.
            if not isinstance(exc, KeyboardInterrupt) and not (_SIGNALLED and isinstance(exc, Exception)):
                if isinstance(exc, DreamgenError):
                    print(f"dreamgen: error: {exc}", file=sys.stderr)
                    sys.exit(2)
                if isinstance(exc, OSError) and exc.errno in USER_ERRNOS:
                    print(f"dreamgen: error: {exc.filename or cfg.run_dir}: {exc.strerror} (check its permissions "
                          "and the free space, or give another run_dir)", file=sys.stderr)
                    sys.exit(2)
                raise
            print(f"dreamgen: interrupted; committed work in {cfg.run_dir} is kept (partial output removed) — "
                  "rerun the same command to resume", file=sys.stderr)
            # Everything was unwound above (partial outputs removed, MLflow runs ended, Ray shut down); skip the
            # interpreter's teardown, where Ray's core worker can crash after an interrupted call (exit -11).
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(130)
        finally:
            logging.disable(logging.NOTSET)
            sys.unraisablehook = unraisable
            for sig, handler in before.items():
                signal.signal(sig, handler)

    return main


def _quiet_interrupts(hook: Callable[[Any], Any], unraisable: Any) -> None:
    """Our own interrupt, swallowed by a finalizer, is no error to print (``stop_if_signalled`` acts on it)."""
    if not (_SIGNALLED and isinstance(unraisable.exc_value, KeyboardInterrupt)):
        hook(unraisable)


def hydra_main(run: Callable[[DictConfig], Any]) -> Callable[[], None]:
    """The Hydra entry point of a verb: compose ``configs/config.yaml`` + overrides, then ``run``."""
    import hydra

    return hydra.main(config_path="../configs", config_name="config", version_base=None)(entrypoint(run))


def progress(iterable: Any, cfg: DictConfig, **kwargs: Any) -> Any:
    """A tqdm bar when ``cfg.progress`` is on (rate shown as ``<unit>/s``)."""
    from tqdm import tqdm

    return tqdm(iterable, disable=not cfg.progress, dynamic_ncols=True, **kwargs)
