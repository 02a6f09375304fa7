"""The page that shows what the model scores (``GET /ui``): one static HTML page, its script and its style sheet.

The page is a client of the public JSON API like any other (the script in ``serving/ui/app.js`` lists the
routes it calls): what it shows is what clients get, and it can do nothing a client cannot. The three files
are fixed (no path from the request reaches the file system) and served with a content security policy that
allows only this origin: no inline script, nothing loaded from elsewhere, no framing.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import Response

from serving.model import ServingError

#: The page's files, shipped inside the package.
UI_DIR = Path(__file__).resolve().parents[2] / "ui"
ASSETS = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "media-src 'self'; connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

router = APIRouter(tags=["ui"], include_in_schema=False)


@cache
def _read(name: str) -> bytes:
    return (UI_DIR / name).read_bytes()


@router.get("/ui")
async def page() -> Response:
    return Response(_read("index.html"), media_type="text/html; charset=utf-8", headers=HEADERS)


@router.get("/ui/{name}")
async def asset(name: str) -> Response:
    if name not in ASSETS:  # the request's text is not echoed back
        raise ServingError(404, "name", f"no such file of the page; it has {', '.join(ASSETS)}")
    return Response(_read(name), media_type=ASSETS[name], headers=HEADERS)
