"""``dreamgen <verb> [hydra overrides]``: each verb runs the Hydra entry module ``jobs.<verb>``.

``dreamgen collect experiment=smoke run_dir=D`` is exactly ``python -m jobs.collect experiment=smoke
run_dir=D`` (same config, same behaviour): the module is run in this process with the overrides.
"""

from __future__ import annotations

import runpy
import sys
from typing import Any

from dreamgen.verbs import CLUSTER_VERBS, USAGE, VERBS, module_of

__all__ = ["main", "module_of", "override_problem"]


def override_problem(overrides: list[str]) -> str | None:
    """One sentence for an override Hydra cannot compose (an unknown key, a misspelt preset, a value its grammar
    cannot parse), with the close matches; None when the config composes. Hydra flags (``--cfg``, ``-m``)
    are left to Hydra."""
    import difflib
    import re
    from pathlib import Path

    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException, MissingConfigException, OverrideParseException

    configs = Path(__file__).resolve().parents[1] / "configs"
    given = [o for o in overrides if not o.startswith("-")]
    if len(given) != len(overrides) or not configs.is_dir():
        return None
    try:
        with initialize_config_dir(config_dir=str(configs), version_base=None):
            compose(config_name="config", overrides=given)
        return None
    except OverrideParseException:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        parser = OverridesParser.create()
        for override in given:
            try:
                parser.parse_override(override)
            except HydraException:
                return (f"cannot read the override {override!r}; write key=value, and put a value with spaces, "
                        "brackets or non-ASCII characters in double quotes inside single ones, e.g. "
                        "'generate.instructions=[\"open the drawer\"]'")
        return f"cannot read the overrides {' '.join(given)!r}"
    except MissingConfigException as exc:
        found = re.search(r"Could not find '([^'/]+)/([^']+)'", str(exc))
        if not found:
            return str(exc).splitlines()[0]
        group, name = found.groups()
        options = sorted(p.stem for p in (configs / group).glob("*.yaml"))
        close = difflib.get_close_matches(name, options, n=3, cutoff=0.5)
        return (f"{group}={name} is not a preset{'; did you mean ' + ' or '.join(close) + '?' if close else ''} "
                f"(accepted: {', '.join(options)})")
    except HydraException as exc:
        found = re.search(r"Could not override '([^']+)'", str(exc))
        if not found:
            return " ".join(str(exc).split())[:400]
        return unknown_key(found.group(1), configs)


SYNONYMS = {"lambda": "penalty", "λ": "penalty"}  # planner.penalty is the λ of the planner's objective


def unknown_key(key: str, configs: Any) -> str:
    """``key`` is no setting: the close matches among every setting's full name."""
    import difflib

    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(configs), version_base=None):
        base = OmegaConf.to_container(compose(config_name="config"), resolve=False)

    def names(node: Any, prefix: str = "") -> list[str]:
        if not isinstance(node, dict):
            return [prefix]
        return [prefix] * bool(prefix) + [n for k, v in node.items() for n in names(v, f"{prefix}{k}" if not prefix
                                                                                      else f"{prefix}.{k}")]

    known = names(base)
    section = key.rsplit(".", 1)[0] if "." in key else ""
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
    leaf = key.rsplit(".", 1)[-1]
    from dreamgen.rundir import RENAMED

    if key in RENAMED:
        return f"{key} is now {RENAMED[key][0]} (give {RENAMED[key][0]}=...)"
    if f"{section}.{SYNONYMS.get(leaf)}".lstrip(".") in known:  # the word the papers use for a setting
        close = [f"{section}.{SYNONYMS[leaf]}".lstrip("."), *[c for c in close if not c.endswith(SYNONYMS[leaf])]][:3]
    siblings = sorted(k.rsplit(".", 1)[-1] for k in known if k.startswith(section + ".") and k.count(".") == key.count("."))
    hint = f"did you mean {' or '.join(close)}?" if close else (
        f"the settings of {section}: {', '.join(siblings)}" if section and siblings else "see configs/config.yaml")
    return f"{key} is not a setting; {hint} (a new key needs a leading +, e.g. +{key}=...)"


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        sys.exit(0 if argv else 2)
    verb, overrides = argv[0], argv[1:]
    if verb not in VERBS:
        print(f"dreamgen: error: unknown verb {verb!r}\n\n{USAGE}", file=sys.stderr)
        sys.exit(2)
    if verb in CLUSTER_VERBS:
        from dreamgen.errors import DreamgenError
        from dreamgen.ray_jobs import main_jobs, main_submit

        try:
            sys.exit((main_submit if verb == "submit" else main_jobs)(overrides))
        except DreamgenError as exc:
            print(f"dreamgen: error: {exc}", file=sys.stderr)
            sys.exit(2)
    problem = override_problem(overrides)
    if problem:
        print(f"dreamgen: error: {problem}", file=sys.stderr)
        sys.exit(2)
    module = module_of(verb)
    sys.argv = [module, *overrides]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
