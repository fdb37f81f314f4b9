"""Data at rest: the zarr TrajectoryStore, LeRobot exchange, and real-world collection."""
