"""Where a scoring request's time goes: the in-process scorer cell by cell, its torch ops, and the app around it.

Three views of one request of ``--candidates`` candidates with a 30-item history (the checkpoint of
``serve_latency.py``: MARN at configs/default.yaml sizes over a synthetic catalogue), 1 torch thread:

1. cells: median ms of each step a request takes (JSON parsing, body validation, store sync, history
   lookup, feature encoding, catalogue rows, the model, response building), each timed on its own;
2. ops: ``torch.profiler``'s table of the model's ops (self CPU time) over 100 requests;
3. app: the FastAPI app driven in process through ASGI (no socket), layer by layer: the whole app, its
   router alone (routing, body, validation, route, response: no middleware), the bare
   ``ScoringService.score``, and the service's middlewares each around a no-op ASGI app. Every request of
   every cell runs between the others', as in a serving worker, where each model run evicts the app's code
   and data from the caches; the figures are the calling thread's CPU time (``time.thread_time``), which
   load from other processes does not stretch. Differences give what each layer adds.

Run:

    .venv/bin/python benchmarks/profile_scorer.py [--candidates 100] [--scorer eager|onnx] [--only-app]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def median_ms(fn: Callable[[int], object], reps: int) -> float:
    """Median wall time of ``fn(i)`` over ``reps`` calls, in ms."""
    times = []
    for i in range(reps):
        start = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


async def asgi_post(app: Any, path: str, body: bytes) -> int:
    """POST ``body`` (JSON) to ``app`` through ASGI, as uvicorn would hand it over; the status code."""
    sent = False
    status = 0

    async def receive() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)  # the client never disconnects
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    headers = [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "state": {},
    }
    await app(scope, receive, send)
    return status


def main() -> None:
    import orjson
    import torch
    from serve_latency import make_checkpoint, request_body

    from serving.api.bodies import parse_json
    from serving.schemas import ScoreRequest
    from serving.server import prepare_state
    from serving.service import ScoringService

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument("--items", type=int, default=5000, help="catalogue size")
    parser.add_argument("--scorer", default="eager", help="serve.scorer of the profiled service")
    parser.add_argument("--reps", type=int, default=300, help="timed calls per cell")
    parser.add_argument("--only-app", action="store_true", help="only the app's layers (view 3)")
    args = parser.parse_args()

    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="profile-scorer-"))
    checkpoint = make_checkpoint(tmp, args.items)
    settings = prepare_state(checkpoint, {"state_dir": str(tmp / "state"), "scorer": args.scorer})
    settings.access_log = True  # as `recsys serve` runs (its log lines go to stderr)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(tmp / "prometheus")
    (tmp / "prometheus").mkdir()
    service = ScoringService.start(settings)
    model = service.model
    rng = random.Random(1)
    raws = [request_body(list(range(1, args.items + 1)), args.candidates, rng) for _ in range(64)]
    parsed = [parse_json(raw) for raw in raws]
    requests = [ScoreRequest.model_validate(p) for p in parsed]
    user, context = model.user_features(1, {}), model.context_features(requests[0].context)
    result = service.score(1, requests[0].candidates, requests[0].history, requests[0].context, None)

    def req(i: int) -> ScoreRequest:
        return requests[i % len(requests)]

    scorer = model.scorer_name
    cells: dict[str, Callable[[int], object]] = {
        "parse JSON (pydantic_core.from_json)": lambda i: parse_json(raws[i % len(raws)]),
        "validate ScoreRequest": lambda i: ScoreRequest.model_validate(parsed[i % len(parsed)]),
        "store sync (one versions query)": lambda i: service.sync(),
        "stored history lookup (store.get_user)": lambda i: service.store.get_user(req(i).user_id),
        "user + context encoding": lambda i: (model.user_features(req(i).user_id, {}), model.context_features({})),
        "catalogue rows (candidates + history)": lambda i: (
            model.catalogue.rows(req(i).candidates, "candidates"),
            model.catalogue.rows(req(i).history or [], "history"),
        ),
        f"model.score ({scorer})": lambda i: model.score(user, context, req(i).history or [], req(i).candidates),
        "ScoringService.score (all of the above but parsing)": lambda i: service.score(
            req(i).user_id, req(i).candidates, req(i).history, req(i).context, None
        ),
        "response: json.dumps of item/score dicts": lambda i: json.dumps(
            {"scores": [{"item_id": k, "score": float(p)} for k, p in zip(result.item_ids, result.scores.tolist())]}
        ),
        "response: orjson (serving/api/routes/scoring.py)": lambda i: orjson.dumps(
            {"scores": [{"item_id": k, "score": p} for k, p in zip(result.item_ids, result.scores.tolist())]}
        ),
    }
    if not args.only_app:
        for fn in cells.values():  # warm-up
            for i in range(10):
                fn(i)
        print(f"cells, {args.candidates} candidates, median of {args.reps} calls:")
        for name, fn in cells.items():
            print(f"  {median_ms(fn, args.reps):8.3f} ms  {name}")

        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            for i in range(100):
                service.score(req(i).user_id, req(i).candidates, req(i).history, req(i).context, None)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))
    service.store.close()
    sys.stderr = (tmp / "stderr.log").open("w")  # the access log, as `recsys serve` writes it to its log file
    layers = app_layers(settings, raws, requests, args.reps)
    sys.stderr = sys.__stderr__
    print(f"the app through ASGI, {args.candidates} candidates, {args.scorer} scorer: median CPU ms per request")
    for name, ms in layers.items():
        print(f"  {ms:8.3f} ms  {name}")
    whole, router, score = layers[WHOLE], layers[ROUTER], layers[SCORE]
    print(f"  {whole - score:8.3f} ms  = what the app adds to ScoringService.score")
    print(f"  {whole - router:8.3f} ms  = the middleware stack (whole app - router)")
    print(f"  {router - score:8.3f} ms  = routing, body, validation, route, response (router - ScoringService.score)")


WHOLE, ROUTER, SCORE = "whole app", "its router alone (no middleware)", "ScoringService.score"


def app_layers(settings: Any, raws: list[bytes], requests: list[Any], reps: int) -> dict[str, float]:
    """Median CPU ms per request of each layer of the app (see the module doc), cells interleaved request by
    request."""
    from fastapi.middleware.asyncexitstack import AsyncExitStackMiddleware
    from starlette.middleware.trustedhost import TrustedHostMiddleware

    from serving.app import create_app
    from serving.observability import ObservabilityMiddleware

    app = create_app(settings)
    stack = AsyncExitStackMiddleware(app.router)

    async def router(scope: dict, receive: Any, send: Any) -> None:
        scope["app"] = app  # what FastAPI's own __call__ sets before the middlewares
        await stack(scope, receive, send)

    async def noop(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b"{}"})

    apps: dict[str, Any] = {
        WHOLE: app,
        ROUTER: router,
        "ObservabilityMiddleware around a no-op app, access log on": ObservabilityMiddleware(noop, 1 << 20, True),
        "ObservabilityMiddleware around a no-op app, access log off": ObservabilityMiddleware(noop, 1 << 20, False),
        "TrustedHostMiddleware around a no-op app": TrustedHostMiddleware(noop, allowed_hosts=settings.trusted_hosts),
        "the no-op app (the harness)": noop,
    }

    async def run() -> dict[str, float]:
        async with app.router.lifespan_context(app):
            service = app.state.service
            cpu: dict[str, list[float]] = {name: [] for name in [*apps, SCORE]}
            for i in range(reps + 30):
                raw, r = raws[i % len(raws)], requests[i % len(requests)]
                for name, target in apps.items():
                    start = time.thread_time()
                    assert await asgi_post(target, "/v1/score", raw) == 200, name
                    cpu[name].append(time.thread_time() - start)
                start = time.thread_time()
                service.score(r.user_id, r.candidates, r.history, r.context, None)
                cpu[SCORE].append(time.thread_time() - start)
            return {name: statistics.median(v[30:]) * 1000 for name, v in cpu.items()}

    return asyncio.run(run())


if __name__ == "__main__":
    main()
