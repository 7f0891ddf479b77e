"""Configs per algorithm: `get_config()` gives the base values, `DATASET_OVERRIDES` the per-dataset table."""
