"""What the platform tells about campaigns: the report, metrics, the audit log, logs."""
