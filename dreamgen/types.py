"""Typed data shared by every stage: one ``Episode`` and the store's key names.

Shapes: ``T`` frames, ``O`` = observation dim (39 for Meta-World v3), ``A`` = action dim (4).
An image store adds ``images`` (``[T, C, H, W, 3]`` uint8, one frame per camera, rendered with the
observation); a store labelled with safety events adds ``unsafe`` (``[T, E]`` bool, its ``events`` in order,
the state after each action: ``dreamgen/safety.py``). Frame ``t`` holds the observation seen *before* ``action[t]`` and the reward/success/done that
followed it (LeRobot's ``next.*`` convention), so an episode of ``T`` frames has ``T`` actions.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

SCHEMA_VERSION = 3  # 2: generation provenance (matched_instruction, similarity, novel, ended); 3: chunk checksums

# Per-frame arrays, concatenated over time in the store (``data/<key>``).
FRAME_KEYS: dict[str, str] = {
    "obs": "float32",  # [T, O]
    "action": "float32",  # [T, A]
    "reward": "float32",  # [T]
    "success": "bool",  # [T] info["success"] after the action
    "done": "bool",  # [T] the episode ended after this frame by termination (not truncation)
}

# Per-episode metadata (``meta/<key>``): name -> (dtype, fill value for a real episode).
EPISODE_META: dict[str, tuple[str, Any]] = {
    "episode_id": ("str", ""),
    "source": ("str", "real"),  # real | dream
    "kind": ("str", ""),  # expert | play | imported | <sampler kind for dreams>
    "task": ("str", ""),
    "instruction": ("str", ""),  # the text the episode was collected or generated for
    "matched_instruction": ("str", ""),  # dreams: the known instruction it resolved to ("" = novel)
    "similarity": ("float32", float("nan")),  # dreams: cosine similarity of instruction to the match
    "novel": ("bool", False),  # dreams: generated zero-shot for an instruction matching no task
    "seed": ("int64", -1),  # env seed that reproduces the initial layout; -1 = unknown
    "start_ref": ("str", ""),  # where the initial state came from ("seed:<n>", "<episode_id>@<t>")
    "world_model_id": ("str", ""),
    "sampler": ("str", ""),
    "job_id": ("str", ""),
    "chunk_id": ("int64", -1),
    "success": ("bool", False),  # episode-level label: success reached at any frame
    "quality": ("float32", float("nan")),
    "disagreement_max": ("float32", float("nan")),
    "ended": ("str", ""),  # dreams: why the rollout ended (success|done|horizon|halted|non-finite)
    "verdict": ("str", ""),  # "" = not filtered yet | accept | reject
    "reason": ("str", ""),  # why the filter gave its verdict
}


@dataclasses.dataclass
class Episode:
    """One trajectory with its provenance. ``meta`` keys are a subset of ``EPISODE_META``."""

    obs: np.ndarray  # [T, O] float32
    action: np.ndarray  # [T, A] float32
    reward: np.ndarray  # [T] float32
    success: np.ndarray  # [T] bool
    done: np.ndarray  # [T] bool
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)
    images: np.ndarray | None = None  # [T, C, H, W, 3] uint8: every camera's frame (image stores only)
    unsafe: np.ndarray | None = None  # [T, E] bool: the store's safety events after each action (labelled stores)

    def __len__(self) -> int:
        return int(self.action.shape[0])

    @property
    def frames(self) -> dict[str, np.ndarray]:
        return {key: getattr(self, key) for key in FRAME_KEYS}

    def full_meta(self) -> dict[str, Any]:
        """Metadata with every ``EPISODE_META`` field, defaults filled in, ``success`` derived."""
        meta = {key: default for key, (_, default) in EPISODE_META.items()}
        meta["success"] = bool(np.any(self.success))
        meta.update(self.meta)
        return meta
