"""Write the published JSON Schema of the wire format: ``python -m workflow_core.schema_file``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from workflow_core.wire import wire_json_schema

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schema" / "definition.schema.json"


def main() -> None:
    """Regenerate ``libs/workflow_core/schema/definition.schema.json``."""
    SCHEMA_PATH.parent.mkdir(parents=True, exist_ok=True)
    SCHEMA_PATH.write_text(json.dumps(wire_json_schema(), indent=2, sort_keys=True) + "\n")
    sys.stdout.write(f"wrote {SCHEMA_PATH}\n")


if __name__ == "__main__":
    main()
