"""Outside systems behind small interfaces: sandboxes, forges, the repository cache."""
