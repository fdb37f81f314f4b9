"""Run directories: one experiment per directory, its resolved config beside every output.

``check_run_dir(path, identity)`` refuses a directory that holds a different run (naming the keys
that differ) or files that are not a dreamgen run — before anything is written. ``staged(final)``
writes an output under a sibling ``.partial`` path and renames it into place only on success, so a
failed verb leaves no half-written output behind, and keeps what earlier verbs (or stages) committed.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dreamgen.errors import RunDirError
from dreamgen.sim import LEGACY
from dreamgen.tracking import flatten

IDENTITY_FILE = "run.json"


def differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """``key=<old> there, <new> here`` for every flattened key whose value differs."""
    a, b = flatten(old), flatten(new)
    return [f"{key}={a.get(key, '<unset>')!r} there, {b.get(key, '<unset>')!r} here"
            for key in sorted(set(a) | set(b)) if a.get(key) != b.get(key)]


# Settings added after runs were recorded, with the value every older run had: an older run dir (or
# pipeline ledger) without the key is the same run as a new one with that value.
ADDED_LATER: dict[str, Any] = flatten({"embodiment": LEGACY, "camera": {"names": [], "size": 64},
                                       "dream": {"success_head": "success", "done_head": "done"},
                                       "world_model": {"contact_gate": None, "gate_mm": 1.0, "pretrain": None,
                                                       "init": None, "replays": None, "false_successes": None,
                                                       "false_success_steps": 5},
                                       "evaluate": {"where": "real", "world_model": "${run_dir}/world_model",
                                                    "judge": "head", "judge_head": "${dream.success_head}"}})
# Settings renamed since: old name -> (new name, the keys the new spelling adds, with the old behaviour)
RENAMED: dict[str, tuple[str, dict[str, Any]]] = {
    "planner.success_weight": ("planner.objective.success", {"planner.objective.reward": 1.0}),
}
# Values respelled since: (setting, old value) -> today's value
RESPELLED: dict[tuple[str, Any], Any] = {("world_model.kind", "state"): "ensemble"}


def as_recorded_now(old: Mapping[str, Any]) -> dict[str, Any]:
    """A recorded identity or settings dict (nested or flat), flattened, in today's spelling: renamed keys
    under their new names, ``ADDED_LATER`` keys filled in where it lacks them."""
    out = flatten(old)
    for before, (after, added) in RENAMED.items():
        if before in out:
            out[after] = out.pop(before)
            out.update({k: v for k, v in added.items() if k not in out})
    for (key, before), after in RESPELLED.items():
        if out.get(key) == before:
            out[key] = after
    return {**ADDED_LATER, **out}


def check_run_dir(path: str | Path, identity: Mapping[str, Any]) -> bool:
    """Return whether ``path`` already holds this run; raise if it holds something else."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise RunDirError(f"run_dir {path} is a file; give a directory")
    if not path.exists() or not any(path.iterdir()):
        return False
    marker = path / IDENTITY_FILE
    if not marker.is_file():
        raise RunDirError(f"run_dir {path} is not empty and holds no {IDENTITY_FILE}: it is not a "
                          "dreamgen run; give a new or empty directory")
    try:
        old = json.loads(marker.read_text())
    except json.JSONDecodeError as exc:
        raise RunDirError(f"run_dir {path}: {IDENTITY_FILE} is corrupt ({exc})") from exc
    changed = differences(as_recorded_now(old), identity)
    if changed:
        shown = "; ".join(changed[:4]) + ("; ..." if len(changed) > 4 else "")
        raise RunDirError(f"run_dir {path} holds a different run ({shown}); use a new run_dir "
                          "or repeat that run's overrides")
    return True


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temp file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))
    tmp.replace(path)


def holds_work(path: Path) -> bool:
    """Whether a run dir holds committed output (anything beyond its identity, configs and temp files)."""
    return any(entry.name not in (IDENTITY_FILE, "configs") and not entry.name.startswith(".")
               and not entry.name.endswith(".partial") for entry in path.iterdir())


@contextmanager
def open_run_dir(path: str | Path, identity: Mapping[str, Any]) -> Iterator[Path]:
    """Create/enter ``path`` for this run. If the verb fails in a run dir it created and nothing was
    committed there, remove it; committed output (a finished stage, committed dream chunks) is kept."""
    path = Path(path)
    existed = check_run_dir(path, identity)
    try:
        path.mkdir(parents=True, exist_ok=True)
        if not existed:
            write_json(path / IDENTITY_FILE, dict(identity))
    except OSError as exc:
        raise RunDirError(f"run_dir {path} cannot be written ({exc.strerror}); give a directory on a writable "
                          "disk with free space") from exc
    try:
        yield path
    except BaseException:
        if not existed and not holds_work(path):
            shutil.rmtree(path, ignore_errors=True)
        raise


@contextmanager
def staged(final: str | Path) -> Iterator[Path]:
    """Yield a ``.partial`` sibling of ``final``; rename it to ``final`` on success, delete on failure."""
    final = Path(final)
    partial = final.with_name(final.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        yield partial
        if final.exists():
            shutil.rmtree(final)
        partial.rename(final)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
