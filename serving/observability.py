"""Prometheus metrics, structured (JSON) request logs and the request-size limit, as one ASGI middleware.

With several uvicorn workers, `recsys serve` points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh
directory so that ``GET /metrics`` on any worker reports the counts of all of them.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import random
import time
from typing import Any, TextIO

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

log = logging.getLogger("recsys.serving.access")


def _multiprocess() -> bool:
    """Whether metric values live in files shared by the workers (the env var was set before import)."""
    from prometheus_client import values

    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR")) and values.ValueClass.__name__ == "MmapedValue"


_MULTIPROC = _multiprocess()


def forget_dead_processes() -> list[int]:
    """Drop the per-process gauge files of workers that no longer run here (a killed replica, a crashed worker), so
    that ``/metrics`` reports the model versions of the workers there are; counters keep their counts. Returns the
    pids forgotten. Every worker calls it when it starts (the directory is one host's: pids are this host's)."""
    import re

    from prometheus_client import multiprocess

    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not (_MULTIPROC and directory and os.path.isdir(directory)):
        return []
    pids = {int(m.group(1)) for name in os.listdir(directory) if (m := re.fullmatch(r"gauge_live\w+_(\d+)\.db", name))}
    dead = sorted(pid for pid in pids if not _running(pid))
    for pid in dead:
        multiprocess.mark_process_dead(pid, directory)
    return dead


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


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


def timestamp(created: float) -> str:
    """``created`` (seconds since the epoch) as the log lines' UTC time, to the millisecond."""
    return _second(int(created)) + f".{int((created % 1) * 1000):03d}Z"


@functools.lru_cache(maxsize=4)
def _second(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


def _json_line(out: dict[str, Any]) -> str:
    """One log line: compact JSON (orjson; anything it cannot encode as its ``str``)."""
    return orjson.dumps(out, default=str).decode()


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, pid, and the message (a dict message is merged in)."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": timestamp(record.created),
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
        return _json_line(out)


class _JsonHandler(logging.StreamHandler):
    """The service's stderr handler (a class of its own, so that configuring twice adds it once)."""


def configure_logging(level: int = logging.INFO, stream: TextIO | None = None) -> None:
    """JSON lines on ``stream`` (default: stderr) for the service's loggers (idempotent; each worker process calls
    it)."""
    import sys

    logger = logging.getLogger("recsys")
    if not any(isinstance(h, _JsonHandler) for h in logger.handlers):
        handler = _JsonHandler(stream or sys.stderr)
        handler.setFormatter(JsonFormatter())
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(level)


class AccessLog:
    """The access log: one JSON line per request (what :class:`JsonFormatter` writes for a dict message), cheap.

    A line through ``logging`` costs a LogRecord, the caller's frame lookup, the formatter and a ``json.dumps``:
    25 us of CPU per request warm and several times that between two model runs, which evict its code from the
    caches (benchmarks/RESULTS.md). When the ``recsys`` logger writes through the service's own handler
    (:func:`configure_logging`), the line is built here with orjson and written to that handler's stream under
    its lock (one write and one flush, as the handler does); with any other logging setup it goes through
    ``logging`` as before. Either way the logger's level applies.
    """

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.handler = _only_json_handler(log)

    def write(self, fields: dict[str, Any]) -> None:
        if not log.isEnabledFor(logging.INFO):
            return
        handler = self.handler
        if handler is None:
            log.info(fields)
            return
        now = time.time()
        line = _json_line({"ts": timestamp(now), "level": "info", "logger": log.name, "pid": self.pid, **fields})
        handler.acquire()
        try:
            stream = handler.stream
            stream.write(line + handler.terminator)
            stream.flush()
        except Exception:  # as logging does: a broken log stream never fails a request
            handler.handleError(logging.makeLogRecord({"msg": fields, "name": log.name}))
        finally:
            handler.release()


def _only_json_handler(logger: logging.Logger) -> _JsonHandler | None:
    """The service's handler when it is the only one a record of ``logger`` reaches (no filters, level open)."""
    handlers: list[logging.Handler] = []
    current: logging.Logger | None = logger
    while current is not None:
        handlers += current.handlers
        current = current.parent if current.propagate else None
    handler = handlers[0] if len(handlers) == 1 else None
    if not isinstance(handler, _JsonHandler) or logger.filters or handler.filters or handler.level > logging.INFO:
        return None
    return handler


def _json_error(status: int, message: str) -> tuple[dict, bytes]:
    body = json.dumps({"detail": {"field": "body", "message": message}}).encode()
    start = {
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
    }
    return start, body


class ObservabilityMiddleware:
    """Counts and times every request, logs it as one JSON line, refuses bodies over ``max_body_bytes``.

    ``request_id_header`` False: the response gets no ``X-Request-Id`` from here, because a proxy in front (Ray
    Serve's) adds it, with the id it put in the request, which this middleware logs.
    """

    def __init__(self, app: Any, max_body_bytes: int, access_log: bool = True, request_id_header: bool = True) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.access_log = AccessLog() if access_log else None
        self.pid = str(os.getpid()).encode()
        self.request_id_header = request_id_header
        # Metric children bound once per (route, method, status): labels() validates and locks on every call.
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._ids = random.Random(os.urandom(16))  # request ids without a system call per request

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = next((v.decode() for k, v in scope["headers"] if k == b"x-request-id"), None) or (
            f"{self._ids.getrandbits(64):016x}"
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
                ours = [(b"x-request-id", request_id.encode())] if self.request_id_header else []
                message = {**message, "headers": [*message.get("headers", []), *ours, (b"x-recsys-worker", self.pid)]}
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
        method = scope["method"]
        key = (route, method, status)
        children = self._children.get(key)
        if children is None:
            children = REQUESTS.labels(route=route, method=method, status=str(status)), LATENCY.labels(route=route)
            if len(self._children) < 10_000:  # routes x methods x statuses: bounded unless scanned for
                self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)
        if self.access_log is not None:
            self.access_log.write(
                {
                    "event": "request",
                    "method": method,
                    "path": scope["path"],
                    "route": route,
                    "status": status,
                    "ms": round(seconds * 1000, 3),
                    "request_id": request_id,
                }
            )


class _BodyTooLarge(Exception):
    pass
