"""The JSON Schema of the site inventory (checked in as config/site.schema.json)."""

from __future__ import annotations

from typing import Any

from .inventory import Site

SCHEMA_ID = "https://restoredrill.invalid/site.schema.json"


def site_schema() -> dict[str, Any]:
    schema = Site.model_json_schema(mode="validation")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "restoredrill site inventory",
        **schema,
    }
