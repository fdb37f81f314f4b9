"""Hydra entry points, one module per verb (``python -m jobs.<verb> [overrides]``).

The only layer that sees Hydra/DictConfig: each module composes and validates the config, builds
plain typed arguments, and calls the library. These modules are also the Ray Jobs entrypoints.
"""
