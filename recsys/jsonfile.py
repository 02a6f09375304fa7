"""Reading a JSON file that a user or an earlier run wrote, with errors that name the file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from recsys.errors import RecsysError


def read_json(path: Path, missing: str, error: type[RecsysError] = RecsysError) -> Any:
    """The parsed content of ``path`` (UTF-8).

    Raises ``error("<path>: <missing>")`` when the file does not exist and
    ``error("<path>: not valid JSON (...)")`` when it does not parse.
    """
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"{path}: {missing}") from None
    except ValueError as exc:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise error(f"{path}: not valid JSON ({exc})") from None
