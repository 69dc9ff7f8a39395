"""What every healthbank process runs on: settings, ids, logs, telemetry, PHI redaction."""
