"""Prometheus metrics, structured (JSON) request logs and the request-size limit, as one ASGI middleware.

With several uvicorn workers, `recsys serve` points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh
directory so that ``GET /metrics`` on any worker reports the counts of all of them.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

log = logging.getLogger("recsys.serving.access")


def _multiprocess() -> bool:
    """Whether metric values live in files shared by the workers (the env var was set before import)."""
    from prometheus_client import values

    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR")) and values.ValueClass.__name__ == "MmapedValue"


_MULTIPROC = _multiprocess()

REQUESTS = Counter(
    "recsys_http_requests_total", "HTTP requests by route, method and status", ["route", "method", "status"]
)
LATENCY = Histogram(
    "recsys_http_request_duration_seconds",
    "HTTP request latency by route",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0),
)
MODEL_INFO = Gauge(
    "recsys_model_info", "The model version a worker serves (value 1)", ["version"], multiprocess_mode="liveall"
)
CATALOGUE = Gauge("recsys_catalogue_items", "Items the worker can score", multiprocess_mode="livemax")
SWAPS = Counter("recsys_model_swaps_total", "Model reloads by outcome", ["outcome"])


def set_model(version: str, previous: str | None, catalogue_items: int) -> None:
    if previous and previous != version:
        MODEL_INFO.remove(previous)
    MODEL_INFO.labels(version=version).set(1)
    CATALOGUE.set(catalogue_items)


def render_metrics() -> tuple[bytes, str]:
    """The Prometheus exposition of this process, or of every worker in multiprocess mode."""
    if _MULTIPROC:
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, pid, and the message (a dict message is merged in)."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
        }
        if isinstance(record.msg, dict):
            out.update(record.msg)
        else:
            out["message"] = record.getMessage()
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class _JsonHandler(logging.StreamHandler):
    """The service's stderr handler (a class of its own, so that configuring twice adds it once)."""


def configure_logging(level: int = logging.INFO) -> None:
    """JSON lines on stderr for the service's loggers (idempotent; each worker process calls it)."""
    import sys

    logger = logging.getLogger("recsys")
    if not any(isinstance(h, _JsonHandler) for h in logger.handlers):
        handler = _JsonHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(level)


def _json_error(status: int, message: str) -> tuple[dict, bytes]:
    body = json.dumps({"detail": {"field": "body", "message": message}}).encode()
    start = {
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
    }
    return start, body


class ObservabilityMiddleware:
    """Counts and times every request, logs it as one JSON line, refuses bodies over ``max_body_bytes``."""

    def __init__(self, app: Any, max_body_bytes: int, access_log: bool = True) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.access_log = access_log
        self.pid = str(os.getpid()).encode()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = (
            next((v.decode() for k, v in scope["headers"] if k == b"x-request-id"), None) or uuid.uuid4().hex[:16]
        )
        status = 500
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            start, body = _json_error(
                413,
                f"request body of {int(declared)} bytes is over the limit of "
                f"{self.max_body_bytes} bytes (serve.max_body_mb)",
            )
            await send(start)
            await send({"type": "http.response.body", "body": body})
            self._record(scope, 413, started, request_id)
            return
        received = 0
        too_large = False

        async def limited_receive() -> dict:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    too_large = True
                    raise _BodyTooLarge()
            return message

        response_started = False

        async def send_wrapper(message: dict) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                message = {
                    **message,
                    "headers": [
                        *message.get("headers", []),
                        (b"x-request-id", request_id.encode()),
                        (b"x-recsys-worker", self.pid),
                    ],
                }
            await send(message)

        try:
            await self.app(scope, limited_receive, send_wrapper)
        except _BodyTooLarge:
            if not response_started:
                start, body = _json_error(
                    413, f"request body over the limit of {self.max_body_bytes} bytes (serve.max_body_mb)"
                )
                await send(start)
                await send({"type": "http.response.body", "body": body})
            status = 413
        finally:
            if too_large:
                status = 413
            self._record(scope, status, started, request_id)

    def _record(self, scope: dict, status: int, started: float, request_id: str) -> None:
        seconds = time.perf_counter() - started
        route = getattr(scope.get("route"), "path", None) or "unmatched"
        REQUESTS.labels(route=route, method=scope["method"], status=str(status)).inc()
        LATENCY.labels(route=route).observe(seconds)
        if self.access_log:
            log.info(
                {
                    "event": "request",
                    "method": scope["method"],
                    "path": scope["path"],
                    "route": route,
                    "status": status,
                    "ms": round(seconds * 1000, 3),
                    "request_id": request_id,
                }
            )


class _BodyTooLarge(Exception):
    pass
