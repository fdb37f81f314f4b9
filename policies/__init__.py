"""Downstream and sampling policies behind one contract (``policies.base.Policy``).

``load_policy(path)`` reads a checkpoint directory (safetensors + JSON) and loads it as the family its
``kind`` names (the registry of families: ``policies.families``).
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
    from policies.families import loader

    return loader(kind, config_file)(path)


def policy_facts(path: str | Path) -> dict | None:
    """What a checkpoint says of itself without loading it: ``kind``, the ``embodiment`` it was trained for
    (None when written before policies recorded it) and the observation size it acts on; None when its spec
    cannot be read (``load_policy`` then says why)."""
    try:
        spec = json.loads((Path(path) / "policy.json").read_text())
        info = spec.get("info") or {}
    except (OSError, ValueError, AttributeError):
        return None
    if "obs_dim" in spec:
        obs = int(spec["obs_dim"])
    elif "obs_dims" in spec:  # an image policy reads these state dims: the state is at least this long
        obs = max(spec["obs_dims"], default=-1) + 1
    else:
        obs = len(spec.get("obs_mean", []))
    return {"kind": spec.get("kind"), "embodiment": info.get("embodiment"), "obs_dim": obs,
            "exact_obs": "obs_dims" not in spec}


__all__ = ["Policy", "load_policy", "policy_facts"]
