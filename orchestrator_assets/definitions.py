"""The code location: every campaign in `campaigns/` as an asset group, plus shared resources."""

from __future__ import annotations

import logging

import dagster as dg

from orchestrator_assets.assets.factory import build_campaign_definitions
from orchestrator_assets.spec.catalog import load_catalog
from orchestrator_assets.spec.settings import Settings
from resources.build import build_resources


def build_definitions(settings: Settings | None = None) -> dg.Definitions:
    """Definitions for all valid campaigns; invalid campaign files are logged and left out."""
    settings = settings or Settings()
    catalog = load_catalog(settings)
    for error in catalog.errors:
        logging.getLogger("orchestrator").error("campaign file skipped:\n%s", error)
    return dg.Definitions.merge(
        *(build_campaign_definitions(c.spec, c.profile) for c in catalog.campaigns.values()),
        # In-process: a run's overhead is seconds per process, and the assets already work on
        # many targets at once inside one step. Applies to backfills launched from the UI too.
        dg.Definitions(resources=build_resources(settings), executor=dg.in_process_executor),
    )


defs = build_definitions()
