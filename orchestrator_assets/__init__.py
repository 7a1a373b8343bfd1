"""The Dagster layer of the campaign platform: spec models, the asset factory, the CLI."""
