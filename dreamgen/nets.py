"""Small network pieces shared by dreamgen's models (the world model's ensemble keeps its own batched layers)."""

from __future__ import annotations

from torch import nn


def mlp_blocks(in_dim: int, hidden: int, layers: int, activation: type[nn.Module]) -> list[nn.Module]:
    """``layers`` × (Linear → LayerNorm → activation), ``in_dim`` → ``hidden``: the hidden stack of an MLP."""
    blocks: list[nn.Module] = []
    width = in_dim
    for _ in range(layers):
        blocks += [nn.Linear(width, hidden), nn.LayerNorm(hidden), activation()]
        width = hidden
    return blocks
