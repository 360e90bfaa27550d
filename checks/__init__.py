"""One module per kind of check; each returns structured ``CheckResult``s (no Prefect here)."""
