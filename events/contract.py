"""The event contract as shipped in events/schema/: a JSON Schema per event, and the AsyncAPI
document of the MQTT topics that refers to them. The daemon serves both (GET /schema/...)."""

from __future__ import annotations

import json
from pathlib import Path

SCHEMA_DIR = Path(__file__).parent / "schema"
SHIPPED_PREFIX = "leadrouter"  # the topic prefix the shipped AsyncAPI document is written for


def event_schema_files() -> dict[str, Path]:
    """Each event type's schema file, by type."""
    return {path.name.removesuffix(".json"): path for path in sorted((SCHEMA_DIR / "events").glob("*.json"))}


def served_documents(topic_prefix: str) -> dict[str, bytes]:
    """What GET /schema/<path> answers, by path: the AsyncAPI document with this daemon's topics,
    and the event schemas its ``$ref`` s name relative to it (``events/<type>.json``)."""
    asyncapi = json.loads((SCHEMA_DIR / "asyncapi.json").read_text())
    asyncapi["channels"] = {
        topic_prefix + channel.removeprefix(SHIPPED_PREFIX): spec for channel, spec in asyncapi["channels"].items()
    }
    documents = {"asyncapi.json": json.dumps(asyncapi, ensure_ascii=False, indent=2).encode()}
    for event_type, path in event_schema_files().items():
        documents[f"events/{event_type}.json"] = path.read_bytes()
    return documents
