"""The policy contract: batched, language-conditioned, deterministic or sampled."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Policy(Protocol):
    """``act(obs[B, O], instruction_embedding[B, C], *, deterministic) -> action[B, A]`` in [-1, 1]."""

    def act(self, obs: np.ndarray, instruction_embedding: np.ndarray, *,
            deterministic: bool = True) -> np.ndarray: ...
