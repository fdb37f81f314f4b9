"""A generation job, planned: resolved instructions, chunks with derived seeds, and a stable job id.

``resolve_requests(entries, resolver, model_tasks, allow_novel) -> [Request]`` turns free text into
tasks (keeping the match and its similarity for provenance). ``make_plan(...) -> GenerationPlan``
splits every request into chunks of ``episodes_per_chunk``; chunk ``i`` has seed
``derive_seed(job seed, "generate", i)`` and its episodes are ``<job_id>-<i>-<j>``. Nothing in a
chunk's content depends on how many workers run it or in which order — that is what makes resume
and retry exactly-once.

The job id hashes what the dreams are made of — the world model's id, the start store's content digest,
the sampler with its checkpoint's content id, the requests, settings and seed — and never a path, so the
same command gives the same ids (and so the same audit split) in any directory.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from dreamgen.dream.core import DreamConfig
from dreamgen.errors import ConfigError, InstructionError
from dreamgen.seeding import derive_seed
from policies.samplers import SamplerSpec


@dataclasses.dataclass(frozen=True)
class Request:
    """``count`` dreams of ``instruction`` (as the user wrote it), resolved to ``task`` via ``matched``."""

    instruction: str
    count: int
    task: str  # "" when novel
    matched: str  # nearest known instruction
    similarity: float
    novel: bool  # matched no task; generated zero-shot (allow_novel=true)


@dataclasses.dataclass(frozen=True)
class Chunk:
    """Episodes ``[first, first + episodes)`` of request ``request``; the unit of work and of commit."""

    index: int
    request: int
    first: int
    episodes: int
    seed: int


@dataclasses.dataclass(frozen=True)
class GenerationPlan:
    job_id: str
    world_model: str  # checkpoint directory
    world_model_id: str
    start_store: str  # real store whose first frames start the dreams
    requests: tuple[Request, ...]
    embeddings: np.ndarray  # [R, C] instruction embedding of each request (computed once, by the driver)
    chunks: tuple[Chunk, ...]
    sampler: SamplerSpec
    dream: DreamConfig
    envs: int  # dream rows stepped together (the vector env's batch)
    seed: int
    embodiment: Any  # dreamgen.sim.base.Embodiment: its expert (the oracle sampler), its parts (retarget)

    @property
    def episodes(self) -> int:
        return sum(r.count for r in self.requests)

    def episode_id(self, chunk: Chunk, j: int) -> str:
        return f"{self.job_id}-{chunk.index:05d}-{j:04d}"

    def instruction_table(self, table: Any) -> Any:
        """The world model's ``InstructionTable`` with every request's text (and embedding) added."""
        return table.extended([r.instruction for r in self.requests], [r.task for r in self.requests],
                              self.embeddings)

    def summary(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "world_model_id": self.world_model_id, "episodes": self.episodes,
                "chunks": len(self.chunks), "sampler": self.sampler.name,
                "requests": [dataclasses.asdict(r) for r in self.requests]}


def parse_entries(entries: Sequence[Any], default_count: int) -> list[tuple[str, int]]:
    """``generate.instructions`` items: ``"text"`` (``default_count`` dreams) or ``{text, count}``."""
    parsed = []
    for i, entry in enumerate(entries):
        if isinstance(entry, str):
            text, count = entry, default_count
        elif isinstance(entry, dict) and set(entry) <= {"text", "count"} and "text" in entry:
            text, count = str(entry["text"]), entry.get("count", default_count)
        else:
            raise ConfigError(f"generate.instructions[{i}]={entry!r}; give a text or {{text: ..., count: N}}")
        if not isinstance(count, int) or count < 1:
            raise ConfigError(f"generate.instructions[{i}] ({text!r}): count={count!r}; must be an integer >= 1")
        parsed.append((text, count))
    if not parsed:
        raise ConfigError("generate.instructions is empty; give at least one instruction")
    return parsed


def resolve_requests(entries: Sequence[tuple[str, int]], resolver: Any, model_tasks: Sequence[str], *,
                     allow_novel: bool) -> list[Request]:
    """Resolve each text to a task the world model knows; refuse (or, with ``allow_novel``, flag) the rest."""
    from dreamgen.language import check_text

    requests = []
    for text, count in entries:
        check_text(text)  # blank, negated or verbless: refused even zero-shot
        try:
            found = resolver.resolve(text)
        except InstructionError as exc:
            if not allow_novel:
                raise InstructionError(f"{exc} (or set generate.allow_novel=true to dream it zero-shot)") from None
            near = resolver.nearest(text)
            requests.append(Request(text, count, "", near.matched, near.similarity, True))
            continue
        requests.append(Request(text, count, found.task, found.matched, found.similarity, False))
    require_known(requests, model_tasks)
    return requests


def require_known(requests: Sequence[Request], model_tasks: Sequence[str]) -> None:
    """Refuse a resolved (not novel) request whose task the world model was not trained on."""
    for r in requests:
        if not r.novel and r.task not in model_tasks:
            raise InstructionError(f"instruction {r.instruction!r} resolves to {r.task} (via {r.matched!r}), "
                                   f"which the world model was not trained on; its tasks: {sorted(set(model_tasks))}")


def job_id_of(*, world_model_id: str, start_store_digest: str, requests: Sequence[Request], sampler: SamplerSpec,
              dream: DreamConfig, envs: int, episodes_per_chunk: int, seed: int) -> str:
    """``gen-<12 hex>``: a hash of the job's content and settings (no path: see the module docstring)."""
    where = {"checkpoint"}  # the sampler's checkpoint directory: where, not what (``checkpoint_id`` is what)
    where |= set() if sampler.options else {"options"}  # a built-in kind's id as before kinds had options
    identity = {"world_model_id": world_model_id, "requests": [dataclasses.asdict(r) for r in requests],
                "sampler": {k: v for k, v in dataclasses.asdict(sampler).items() if k not in where}
                | ({"planner": sampler.planner.identity()} if sampler.planner is not None else {}),
                "dream": dream.identity(), "envs": envs, "episodes_per_chunk": episodes_per_chunk,
                "seed": seed, "start_store_digest": start_store_digest}
    return "gen-" + hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]


def make_plan(*, requests: Sequence[Request], embeddings: np.ndarray, world_model: str, world_model_id: str,
              start_store: str, start_store_digest: str, sampler: SamplerSpec, dream: DreamConfig, envs: int,
              episodes_per_chunk: int, seed: int, embodiment: Any) -> GenerationPlan:
    if envs < 1 or episodes_per_chunk < 1:
        raise ConfigError(f"generate.envs_per_worker={envs} and generate.episodes_per_chunk="
                          f"{episodes_per_chunk}; both must be >= 1")
    job_id = job_id_of(world_model_id=world_model_id, start_store_digest=start_store_digest, requests=requests,
                       sampler=sampler, dream=dream, envs=envs, episodes_per_chunk=episodes_per_chunk, seed=seed)
    chunks: list[Chunk] = []
    for r, request in enumerate(requests):
        for first in range(0, request.count, episodes_per_chunk):
            index = len(chunks)
            chunks.append(Chunk(index, r, first, min(episodes_per_chunk, request.count - first),
                                derive_seed(seed, "generate", index)))
    return GenerationPlan(job_id, world_model, world_model_id, start_store, tuple(requests),
                          np.asarray(embeddings, np.float32), tuple(chunks), sampler, dream, envs, seed,
                          embodiment)
