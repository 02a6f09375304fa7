"""A JSON response written directly (no response-model pass over a body the route already shaped)."""

from __future__ import annotations

import json
from typing import Any

from fastapi.responses import Response


def json_response(payload: dict[str, Any], status: int = 200) -> Response:
    """``payload`` as an ``application/json`` response with status ``status``."""
    return Response(json.dumps(payload), status_code=status, media_type="application/json")
