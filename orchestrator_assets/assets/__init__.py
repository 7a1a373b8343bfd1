"""The Dagster layer: the per-campaign asset factory, partitions, history, metadata, runs."""
