"""The import graph, read from the source: layers import only what lies below them, and nothing imports in
a circle. A new arrow that runs back up fails here, naming the module and the import."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

PACKAGES = ("dreamgen", "policies", "generation", "jobs")
# each top-level package imports only those before it (and itself)
LAYERS = {name: PACKAGES[:i + 1] for i, name in enumerate(PACKAGES)}
# inside dreamgen: the shared vocabulary sits below the robot, the store and the model, and these never
# import one another for it (the store may run the robot to collect, never the other way round)
FORBIDDEN = {
    "dreamgen.spaces": ("dreamgen.sim", "dreamgen.data", "dreamgen.world_model"),
    "dreamgen.safety": ("dreamgen.sim", "dreamgen.data", "dreamgen.world_model"),
    "dreamgen.shield": ("dreamgen.sim", "dreamgen.data", "dreamgen.dream"),
    "dreamgen.world_model.risk": ("dreamgen.sim", "dreamgen.dream", "dreamgen.quality"),
    "dreamgen.sim": ("dreamgen.world_model", "dreamgen.data", "dreamgen.dream", "dreamgen.quality"),
    "dreamgen.world_model": ("dreamgen.sim", "dreamgen.data", "dreamgen.dream", "dreamgen.quality"),
    "dreamgen.cli": (),
    "dreamgen.ray_jobs": ("dreamgen.cli",),
}


def module_graph() -> dict[str, set[str]]:
    """``module -> modules it imports`` (at any depth: lazy imports count), over the project's packages."""
    modules = {}
    for package in PACKAGES:
        for file in (REPO / package).rglob("*.py"):
            modules[".".join(file.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")] = file
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, file in modules.items():
        for node in ast.walk(ast.parse(Path(file).read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                targets = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                continue
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def test_each_layer_imports_only_the_layers_below_it():
    graph = module_graph()
    assert len(graph) > 50 and any(graph.values())  # the graph was read, not empty
    upward = [(a, b) for a, targets in graph.items() for b in targets
              if b.split(".")[0] not in LAYERS[a.split(".")[0]]]
    assert not upward, f"imports that run back up a layer: {upward}"
    crossing = [(a, b) for a, targets in graph.items() for b in targets for prefix, banned in FORBIDDEN.items()
                if (a == prefix or a.startswith(prefix + ".")) and any(b == x or b.startswith(x + ".") for x in banned)]
    assert not crossing, f"imports across the vocabulary line: {crossing}"


def test_no_module_imports_in_a_circle():
    graph = module_graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    assert not cycles, f"modules that import each other in a circle: {cycles}"


def test_the_codes_defaults_are_the_configs():
    """One source for every default: a settings dataclass built with no arguments is configs/config.yaml's
    section (what a benchmark or a library user gets is what the CLI gets)."""
    import dataclasses

    from omegaconf import OmegaConf

    from dreamgen.dream.core import DreamConfig
    from dreamgen.plan.mppi import PlannerConfig
    from dreamgen.quality.filter import FilterConfig
    from dreamgen.quality.model import QualityConfig
    from dreamgen.world_model.ensemble import EnsembleConfig
    from dreamgen.world_model.latent import LatentConfig

    config = OmegaConf.to_container(OmegaConf.load(REPO / "configs" / "config.yaml"), resolve=False)
    # settings that no config key holds: the samplers set them (their own track weights), or "auto" maps to None
    code_only = {("PlannerConfig", "track_weight"), ("EnsembleConfig", "gate"),  # from world_model.contact_gate
                 ("FilterConfig", "quality_threshold")}
    checked, drift = 0, []
    for cls, section in ((EnsembleConfig, "world_model"), (LatentConfig, "world_model.latent"),
                         (PlannerConfig, "planner"), (QualityConfig, "quality"), (FilterConfig, "filter"),
                         (DreamConfig, "dream")):
        node = config
        for key in section.split("."):
            node = node[key]
        for field in dataclasses.fields(cls):
            factory = field.default_factory  # type: ignore[misc]
            if (field.default is dataclasses.MISSING and factory is dataclasses.MISSING) \
                    or (cls.__name__, field.name) in code_only:
                continue
            checked += 1
            default = factory() if factory is not dataclasses.MISSING else field.default
            default = list(default) if isinstance(default, tuple) else default
            if field.name not in node or node[field.name] != default:
                drift.append(f"{cls.__name__}.{field.name}={default!r}, {section}.{field.name}="
                             f"{node.get(field.name, '<missing>')!r}")
    assert checked > 30 and not drift, drift
    assert FilterConfig().quality_threshold is None and config["filter"]["quality_threshold"] == "auto"


def test_every_package_is_installed_and_shipped_in_the_image():
    """A new top-level package is listed in pyproject's package find and copied into the cluster image."""
    import tomllib

    include = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    listed = {pattern.rstrip("*") for pattern in include}
    dockerfile = (REPO / "k8s" / "Dockerfile").read_text()
    assert listed == set(PACKAGES)
    assert all(f"COPY {name} {name}" in dockerfile for name in PACKAGES), dockerfile
    assert all((REPO / name / "__init__.py").is_file() for name in PACKAGES)


def test_a_run_recorded_before_a_rename_is_the_same_run_in_todays_spelling():
    """A run dir or pipeline ledger written before the planner's heads were named (``success_weight``) and
    before the dream named its heads resumes as the same run; a changed value is still named."""
    from dreamgen.rundir import as_recorded_now, differences
    from dreamgen.sim import LEGACY

    now = {"planner": {"horizon": 5, "objective": {"reward": 1.0, "success": 50.0}},
           "world_model": {"kind": "ensemble", "contact_gate": None, "gate_mm": 1.0,  # a run before the gate had none
                           "false_success_steps": 5},
           "dream": {"horizon": 150, "success_head": "success", "done_head": "done"},
           "embodiment": LEGACY, "camera": {"names": [], "size": 64},
           "evaluate": {"where": "real", "world_model": "${run_dir}/world_model", "judge": "head",
                        "judge_head": "${dream.success_head}"}}  # a run before policies were judged in the dream
    old = {"planner": {"horizon": 5, "success_weight": 50.0}, "dream": {"horizon": 150}, "world_model": {"kind": "state"}}
    assert differences(as_recorded_now(old), now) == []
    assert differences(as_recorded_now({"planner.horizon": 5, "planner.success_weight": 50.0, "dream.horizon": 150,
                                        "world_model.kind": "state"}), now) == []  # a ledger's flat settings
    changed = differences(as_recorded_now({**old, "planner": {"horizon": 5, "success_weight": 20.0}}), now)
    assert changed == ["planner.objective.success=20.0 there, 50.0 here"]
    gated = {**now, "world_model": {**now["world_model"], "contact_gate": "auto"}}  # today's default
    assert differences(as_recorded_now(old), gated) == ["world_model.contact_gate=None there, 'auto' here"]


# other vocabularies that share a word with a sampler kind: the episode kind "expert" (collect.py) and the
# ensemble's propagation "random"; (file, the compared expression) pairs, each one named here
OTHER_VOCABULARIES = {("dreamgen/data/collect.py", "kind"), ("dreamgen/world_model/ensemble.py", "propagation")}


def test_no_code_compares_a_sampler_kind_or_a_policy_family_by_name():
    """What a sampler kind or a policy family does is asked of its registry entry (``kind.plans``,
    ``family.images`` ...), never decided by comparing its name: a comparison (``==``, ``in``, ``match``) or a
    table keyed by two or more of the names is a place a new kind would silently miss."""
    from policies.families import FAMILIES
    from policies.samplers import SAMPLERS

    names = {k.name for k in SAMPLERS} | {f.name for f in FAMILIES}
    assert {"planner", "recovery", "bc", "mpc"} <= names  # the registries were read
    found = []
    for package in PACKAGES:
        for file in sorted((REPO / package).rglob("*.py")):
            path, source = file.relative_to(REPO).as_posix(), file.read_text()
            for node in ast.walk(ast.parse(source)):
                if isinstance(node, ast.Compare):
                    operands = [node.left, *node.comparators]
                    hits = {c.value for o in operands for c in ast.walk(o)
                            if isinstance(c, ast.Constant) and c.value in names}
                    others = {ast.unparse(o) for o in operands if not isinstance(o, ast.Constant | ast.Tuple
                                                                               | ast.List | ast.Set)}
                    if hits and not all((path, o) in OTHER_VOCABULARIES for o in others):
                        found.append(f"{path}:{node.lineno}: {ast.unparse(node)}")
                elif isinstance(node, ast.Dict):
                    if len({k.value for k in node.keys if isinstance(k, ast.Constant) and k.value in names}) >= 2:
                        found.append(f"{path}:{node.lineno}: a table keyed by kind names")
                elif isinstance(node, ast.MatchValue) and isinstance(node.value, ast.Constant) \
                        and node.value.value in names:
                    found.append(f"{path}:{node.lineno}: case {node.value.value!r}")
    assert not found, "ask the kind or the family instead of comparing its name:\n" + "\n".join(found)
