"""Prefect flows and everything about a run: plan, verdicts, evidence, alerts, CLI."""
