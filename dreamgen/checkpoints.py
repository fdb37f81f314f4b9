"""Checkpoint files every model shares: ``model.safetensors`` + one JSON spec, checked on read.

``write_checkpoint`` records ``content_sha256`` — a hash of the tensor bytes and of the spec without
it — in the spec. ``read_checkpoint`` recomputes it: a checkpoint whose JSON or tensors were edited
or damaged after it was written is refused with the file named, never loaded under its old identity.
Every way a checkpoint can fail to load (missing file, bad JSON, missing field, tensors that do not
fit the spec) is a ``CheckpointError`` naming the file and what would be accepted. Never a pickle.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dreamgen.errors import CheckpointError

TENSORS = "model.safetensors"
DIGEST_KEY = "content_sha256"


def content_digest(blob: bytes, spec: Mapping[str, Any], *, exclude: tuple[str, ...] = ()) -> str:
    """sha256 of the tensor bytes and the spec's canonical JSON (without ``content_sha256`` and ``exclude``)."""
    body = {k: v for k, v in spec.items() if k != DIGEST_KEY and k not in exclude}
    return hashlib.sha256(blob + json.dumps(body, sort_keys=True).encode()).hexdigest()


def write_checkpoint(path: str | Path, tensors: Mapping[str, Any], spec: Mapping[str, Any], spec_file: str, *,
                     named: Callable[[str], dict[str, Any]] | None = None) -> dict[str, Any]:
    """Write ``model.safetensors`` and ``spec_file`` into directory ``path``; return the spec as written.

    ``named(content_sha256)`` may add fields derived from the content hash (a model id); they are not
    part of what is hashed, so a reader passes their keys as ``exclude``."""
    from safetensors.torch import save

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    blob = save({k: v.detach().cpu().contiguous() for k, v in tensors.items()})
    written: dict[str, Any] = json.loads(json.dumps(dict(spec)))  # what a reader will parse (tuples -> lists)
    written[DIGEST_KEY] = content_digest(blob, written)
    written.update(named(written[DIGEST_KEY]) if named is not None else {})
    (path / TENSORS).write_bytes(blob)
    tmp = path / f".{spec_file}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(written, indent=1, sort_keys=True))
    tmp.replace(path / spec_file)
    return written


def read_checkpoint(path: str | Path, spec_file: str, what: str, make: str, *,
                    exclude: tuple[str, ...] = (), legacy: Callable[[dict[str, Any], bytes], bool] | None = None
                    ) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(spec, tensors)`` of a checkpoint directory, its content checked against ``content_sha256``.

    ``what`` names the kind of checkpoint in messages ("policy", "quality model"); ``make`` says how to
    get a good one. ``legacy(spec, blob)`` may vouch for a checkpoint written before ``content_sha256``.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load

    path = Path(path)
    if not path.is_dir() or not (path / spec_file).is_file() or not (path / TENSORS).is_file():
        raise CheckpointError(f"{path}: not a {what} checkpoint (needs {spec_file} and {TENSORS}); {make}")
    try:
        spec = json.loads((path / spec_file).read_text())
        blob = (path / TENSORS).read_bytes()
        tensors = load(blob)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path / spec_file}: not valid JSON ({exc}); {make}") from exc
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path / TENSORS}: unreadable ({exc}); {make}") from exc
    if not isinstance(spec, dict):
        raise CheckpointError(f"{path / spec_file}: expected a JSON object, got {type(spec).__name__}; {make}")
    recorded = spec.get(DIGEST_KEY)
    if recorded is None and not (legacy is not None and legacy(spec, blob)):
        raise CheckpointError(f"{path / spec_file}: no {DIGEST_KEY} recorded, so its content cannot be trusted; {make}")
    if recorded is not None and recorded != content_digest(blob, spec, exclude=exclude):
        raise CheckpointError(f"{path}: {spec_file} or {TENSORS} changed after the {what} was written (its "
                              f"{DIGEST_KEY} does not match the content); {make}")
    return spec, tensors


def recorded_digest(path: str | Path, spec_file: str) -> str | None:
    """The ``content_sha256`` a checkpoint directory records (its identity by content, wherever it lives), or
    None when there is none to read. Cheap: the spec only, not checked here (loading checks it)."""
    try:
        spec = json.loads((Path(path) / spec_file).read_text())
    except (OSError, ValueError):
        return None
    return spec.get(DIGEST_KEY) if isinstance(spec, dict) else None


@contextmanager
def loading(path: str | Path, what: str, make: str) -> Iterator[None]:
    """Turn a spec that lacks a field, or tensors that do not fit it, into one ``CheckpointError``."""
    try:
        yield
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: the {what} checkpoint does not load ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:300]}); {make}") from exc
