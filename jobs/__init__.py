"""Hydra entry points, one module per verb (``python -m jobs.<verb> [overrides]``).

The only layer that sees Hydra/DictConfig: each module composes and validates the config, builds
plain typed arguments, and calls the library. These modules are also the Ray Jobs entrypoints.
"""

import os

# The CLI never reaches a model hub: the sentence model ships as a package, datasets are local roots.
for _name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(_name, "1")
