"""What a campaign is: the campaign and profile models, settings, the catalog, their errors."""
