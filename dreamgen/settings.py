"""Every setting's type checked against its default in ``configs/config.yaml``, before any work.

A string where a number belongs (``collect.n_expert=abc``), a float where a count belongs
(``generate.episodes=2.5``), a bool where a number belongs, a negative count or seed: each is one
``ConfigError`` naming the key, what was given and what is accepted. Ranges beyond "not negative" are
each verb's own checks (they know what a value means); this catches what they would otherwise meet
as a Python exception deep inside.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dreamgen.errors import ConfigError

DEFAULTS = Path(__file__).resolve().parents[1] / "configs" / "config.yaml"
# keys whose default does not say everything they accept
UNIONS: dict[str, tuple[str, tuple[type, ...], tuple[Any, ...]]] = {
    "filter.quality_threshold": ("a probability in [0, 1] or auto", (int, float), ("auto",)),
    "policy.seed": ("an integer >= 0 or null (the run seed)", (int,), (None,)),
    "world_model.contact_gate": ("a part of the robot (e.g. object), auto or null (no gate)", (str,), (None,)),
    "safety.events": ("all or a list of the robot's safety events (e.g. [table_strike]; [] for none)", (list,), ("all",)),
}
SKIP = ("hydra",)


def _kind(value: Any) -> str:
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string", type(None): "null"}.get(
        type(value), "a list" if isinstance(value, list) else "a mapping" if isinstance(value, Mapping) else
        type(value).__name__)


def _check(key: str, default: Any, value: Any) -> None:
    if key in UNIONS:
        words, types, literals = UNIONS[key]
        if value in literals and not isinstance(value, bool) or isinstance(value, types) and not isinstance(value, bool):
            if isinstance(value, int) and not isinstance(value, bool) and value < 0:
                raise ConfigError(f"{key}={value!r}: must be {words}")
            return
        raise ConfigError(f"{key}={value!r}: must be {words}; got {_kind(value)}")
    if default is None or (isinstance(default, str) and "${" in default):
        return  # a path, or a value derived from another key: the verb that reads it checks it
    if isinstance(default, bool):
        ok, words = isinstance(value, bool), "true or false"
    elif isinstance(default, int):
        ok, words = isinstance(value, int) and not isinstance(value, bool), "an integer (a count or a seed)"
        if ok and value < 0:
            raise ConfigError(f"{key}={value!r}: must be an integer >= 0")
    elif isinstance(default, float):
        ok, words = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
    elif isinstance(default, str):
        ok, words = isinstance(value, str), "a string"
    elif isinstance(default, list):
        if not isinstance(value, list):
            raise ConfigError(f"{key}={value!r}: must be a list, e.g. [{', '.join(map(str, default[:2]))}]; "
                              f"got {_kind(value)}")
        if default and not isinstance(default[0], (dict, list)):
            for index, item in enumerate(value):
                _check(f"{key}[{index}]", default[0], item)
        return
    else:
        return
    if not ok:
        raise ConfigError(f"{key}={value!r}: must be {words}; got {_kind(value)}")


def check_types(values: Mapping[str, Any], defaults: Mapping[str, Any] | None = None, prefix: str = "") -> None:
    """Raise ``ConfigError`` for the first key whose value does not fit its default's type."""
    if defaults is None:
        from omegaconf import OmegaConf

        raw = OmegaConf.to_container(OmegaConf.load(DEFAULTS), resolve=False)
        assert isinstance(raw, dict)
        defaults = {str(k): v for k, v in raw.items()}
    known: Mapping[str, Any] = defaults
    for key, value in values.items():
        name = f"{prefix}{key}"
        if name in SKIP or key not in known:
            continue
        default = known[key]
        if isinstance(default, Mapping):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{name}={value!r}: is a section; set its keys ({', '.join(list(default)[:4])}, ...)")
            check_types(value, default, f"{name}.")
        else:
            _check(name, default, value)
