"""Downstream and sampling policies behind one contract (``policies.base.Policy``).

``load_policy(path)`` reads a checkpoint directory (safetensors + JSON) and dispatches on its
``kind`` through the one registry below.
"""

from __future__ import annotations

import json
from pathlib import Path

from policies.base import Policy


def load_policy(path: str | Path) -> Policy:
    from dreamgen.errors import CheckpointError

    path = Path(path)
    config_file = path / "policy.json"
    if not config_file.is_file():
        raise CheckpointError(f"{path}: not a policy checkpoint (no policy.json); train one with `dreamgen train-policy`")
    try:
        kind = json.loads(config_file.read_text()).get("kind")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as exc:
        raise CheckpointError(f"{config_file}: not a policy spec (a JSON object with a kind) ({exc})") from exc
    if kind == "bc":
        from policies.bc import BCPolicy

        return BCPolicy.load(path)
    if kind == "bc-image":
        from policies.bc import ImageBCPolicy

        return ImageBCPolicy.load(path)
    if kind == "sb3":
        from policies.sb3_dream import SB3DreamPolicy

        return SB3DreamPolicy.load(path)
    raise CheckpointError(f"{config_file}: unknown policy kind {kind!r}; known: bc, bc-image, sb3")


__all__ = ["Policy", "load_policy"]
