"""The published JSON Schema of a Dhara flow file.

It covers the document's structure (fields, types, enums); what a schema cannot say (that a
referenced function or node exists, reachability, declared state fields, bound handlers) the
loader checks. Point an editor at it with ``"$schema"`` in the flow file, or get it with
:func:`flow_json_schema`.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = ["SCHEMA_PATH", "flow_json_schema"]

#: Where the schema file is installed.
SCHEMA_PATH = Path(str(resources.files(__package__).joinpath("flow.schema.json")))


def flow_json_schema() -> dict[str, Any]:
    """The flow file's JSON Schema (draft 2020-12), as a fresh dict."""
    schema: dict[str, Any] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    return schema
