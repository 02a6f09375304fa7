"""The /ui page in a real browser: `recsys serve` (uvicorn, 2 workers) on 127.0.0.1 and Debian's Chromium driven
by Playwright (the system browser, headless; nothing downloaded). What the page shows must be what the JSON
API gives any client: the ranking, its scores, the cold flags and modality shares, the user's history and its
media, and a newly uploaded item scored for the user.

Skipped, with the reason, where Chromium is not installed (CI installs it: `.ci/run`).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import httpx
import polars as pl
import pytest
from support.server import API_KEY

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
NEW_ITEM = 990_500

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium; CI installs it in .ci/run)"
    ),
]


def api_top(url: str, user: int, candidates: list[int], top_k: int) -> list[dict]:
    body = {"user_id": user, "candidates": candidates, "top_k": top_k, "explain": True}
    resp = httpx.post(f"{url}/v1/score", json=body, timeout=60)
    assert resp.status_code == 200, resp.text
    return resp.json()["scores"]


def rows(page, selector: str) -> list[dict]:
    """The ranked rows the page shows: item id, score (the full-precision number), cold flag, shares."""
    out = []
    for row in page.locator(selector).all():
        keys = row.locator(".key").all()
        shares = {k.get_attribute("data-modality"): float(k.get_attribute("data-share")) for k in keys}
        out.append(
            {
                "item_id": int(row.get_attribute("data-item-id")),
                "score": float(row.get_attribute("data-score")),
                "cold": row.get_attribute("data-cold") == "true",
                "modality_shares": shares or None,
            }
        )
    return out


def test_the_page_shows_what_the_api_scores_and_scores_an_uploaded_item(server, trained_run) -> None:
    from playwright.sync_api import expect, sync_playwright

    url = server.url
    users = httpx.get(f"{url}/v1/users", params={"limit": 50}).json()["users"]
    user = max(users, key=lambda u: (u["history_length"], -u["user_id"]))["user_id"]
    history = httpx.get(f"{url}/v1/users/{user}").json()["history"]
    candidates = [i["item_id"] for i in httpx.get(f"{url}/v1/items", params={"limit": 100}).json()["items"]]
    items = pl.read_parquet(trained_run.data_dir / "items.parquet")
    media = items.filter(pl.col("image_path").is_not_null() & pl.col("audio_path").is_not_null()).row(0, named=True)

    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
            page.on("console", lambda msg: msg.type == "error" and problems.append(f"console: {msg.text}"))
            page.goto(f"{url}/ui")
            expect(page.locator("body")).to_have_attribute("data-ready", "true", timeout=30_000)

            # Pick a user: the ranking is the API's top 10 of the first 100 items, scores equal and descending.
            page.select_option("#user", str(user))
            expect(page.locator("#status")).to_have_text(f"user {user}: scored", timeout=30_000)
            shown = rows(page, "#ranking .row")
            assert [r["score"] for r in shown] == sorted((r["score"] for r in shown), reverse=True)
            expected = api_top(url, user, candidates, 10)
            assert shown == expected  # ids, scores, cold flags and modality shares, in order
            assert all(abs(sum(r["modality_shares"].values()) - 1) < 1e-4 for r in shown)
            expect(page.locator("#ranking-title")).to_have_text(f"Top 10 of 100 candidates for user {user}")

            # The user's recent history, newest first, with its pictures (decoded by the browser) and audio players.
            cards = page.locator("#history .card")
            expect(cards).to_have_count(min(12, len(history)))
            assert [int(c.get_attribute("data-item-id")) for c in cards.all()] == history[::-1][:12]
            pictures = page.locator("#history img.poster")
            assert pictures.count() > 0
            for picture in pictures.all():
                expect(picture).to_have_js_property("complete", True)
                assert picture.evaluate("img => img.naturalWidth") > 0, picture.get_attribute("src")
            players = page.locator("#history audio")
            assert players.count() > 0
            audio = httpx.get(f"{url}{players.first.get_attribute('src')}")
            assert audio.status_code == 200 and audio.headers["content-type"] == "audio/wav"

            # Upload a new item (title, image, audio): encoded by the service, scored for the user, shown cold.
            page.fill("#api-key", API_KEY)
            page.fill("#new-id", str(NEW_ITEM))
            page.fill("#new-title", f"{media['title']} (new)")
            page.set_input_files("#new-image", str(trained_run.data_dir / media["image_path"]))
            page.set_input_files("#new-audio", str(trained_run.data_dir / media["audio_path"]))
            page.click("#upload-button")
            new = page.locator("#new-item .row")
            expect(new).to_have_attribute("data-item-id", str(NEW_ITEM), timeout=120_000)
            expect(page.locator("#status")).to_have_text(f"user {user}: scored")
            ranked = api_top(url, user, [*candidates, NEW_ITEM], 101)
            rank = next(k for k, s in enumerate(ranked) if s["item_id"] == NEW_ITEM)
            assert rows(page, "#new-item .row") == [ranked[rank]] and ranked[rank]["cold"] is True
            expect(page.locator("#new-item .note")).to_contain_text(f"ranks #{rank + 1} of 101")
            assert rows(page, "#ranking .row") == ranked[:10]  # the ranking now includes the new item
            expect(new.locator("img")).to_have_js_property("complete", True)
            assert new.locator("img").evaluate("img => img.naturalWidth") > 0
            expect(new.locator("audio")).to_have_attribute("src", f"/v1/items/{NEW_ITEM}/media/audio")
            if os.environ.get("RECSYS_UI_SCREENSHOT"):  # how docs/ui.png is made
                page.screenshot(path=Path(os.environ["RECSYS_UI_SCREENSHOT"]), full_page=True)
        finally:
            browser.close()
    assert not problems, problems


def test_the_pages_endpoints_refuse_bad_input_with_a_4xx_naming_the_field(server, trained_run) -> None:
    url = server.url
    items = pl.read_parquet(trained_run.data_dir / "items.parquet")
    silent = int(items.filter(pl.col("audio_path").is_null())["item_id"][0])
    cases = [
        ("/v1/users?limit=0", 422, "limit"),
        ("/v1/users?limit=1001", 422, "limit"),
        ("/v1/items?limit=abc", 422, "limit"),
        (f"/v1/items?after={2**63}", 422, "after"),
        ("/v1/items/1/media/video", 422, "kind"),
        ("/v1/items/31337/media/image", 404, "item_id"),
        (f"/v1/items/{silent}/media/audio", 404, "kind"),
        ("/v1/items/1/media/..%2F..%2Fetc%2Fpasswd", 404, "path"),
        ("/ui/..%2Fapp.py", 404, "path"),
        ("/ui/index.html", 404, "name"),
    ]
    for path, status, field in cases:
        resp = httpx.get(f"{url}{path}")
        assert (resp.status_code, resp.json()["detail"]["field"]) == (status, field), (path, resp.text)
    message = {path: httpx.get(f"{url}{path}").json()["detail"]["message"] for path, _, _ in cases[5:7]}
    assert list(message.values()) == ["unknown item id 31337", f"item {silent} has no audio"]
    bad = httpx.post(f"{url}/v1/score", json={"user_id": 1, "candidates": [1], "explain": "yes"})
    assert bad.status_code == 422 and bad.json()["detail"]["field"] == "explain"

    # Pages chain through next_after; media come with their type and a policy that keeps them inert.
    first = httpx.get(f"{url}/v1/items", params={"limit": 3}).json()
    second = httpx.get(f"{url}/v1/items", params={"limit": 3, "after": first["next_after"]}).json()
    ids = [i["item_id"] for i in first["items"] + second["items"]]
    assert ids == sorted(ids) and len(set(ids)) == 6 and first["next_after"] == ids[2]
    image = httpx.get(f"{url}/v1/items/{ids[0]}/media/image")
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    assert image.headers["content-security-policy"] == "sandbox" and image.content.startswith(b"\x89PNG")
    page = httpx.get(f"{url}/ui")
    assert page.status_code == 200 and "script-src 'self'" in page.headers["content-security-policy"]
    paths = httpx.get(f"{url}/openapi.json").json()["paths"]
    assert {"/v1/users", "/v1/items", "/v1/items/{item_id}/media/{kind}"} <= set(paths) and "/ui" not in paths
