"""The `orchestrator` command line, one module per command group."""
