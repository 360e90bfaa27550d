"""Sandboxes: twin backends, backup sources and field-device emulators (no Prefect here)."""
