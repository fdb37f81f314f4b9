"""dreamgen: multiply scarce robot demonstrations with filtered, capped dreams from a world model.

The package imports nothing heavy at import time: simulators, torch, zarr, mlflow and lerobot are
imported inside the modules that need them.
"""

__version__ = "0.1.0"
