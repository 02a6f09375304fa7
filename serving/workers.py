"""N uvicorn worker processes, each accepting on its own ``SO_REUSEPORT`` socket.

uvicorn's own ``--workers`` shares ONE listening socket between the processes. The first worker
to wake up accepts every connection that is waiting (asyncio accepts up to the backlog per
wake-up), so a burst of keep-alive connections (a load balancer's pool, a client with 8
connections) can all land on one worker while the other idles: measured here, 8 connections
gave one worker 90% CPU and the other 1%, halving throughput. With ``SO_REUSEPORT`` every
worker has its own listening socket on the same address and the kernel spreads new connections
across them by a hash of the connection.

The supervisor (the ``recsys serve`` process) starts the workers, restarts one that dies
(``RESTART_LIMIT`` times at most within ``RESTART_WINDOW_S`` seconds, then gives up and stops
the others), and stops them all on SIGINT/SIGTERM (uvicorn's graceful shutdown, SIGKILL after
``STOP_TIMEOUT_S``). Platforms without ``SO_REUSEPORT`` fall back to uvicorn's shared socket.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import socket
import threading
import time
from collections import deque
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

log = logging.getLogger("recsys.serving")

RESTART_LIMIT = 5
RESTART_WINDOW_S = 60.0
STOP_TIMEOUT_S = 15.0


def reuseport_supported() -> bool:
    """True where each worker can listen on the same address with its own socket."""
    return hasattr(socket, "SO_REUSEPORT") and os.name == "posix"


def bind_reuseport(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` that other processes may bind too (SO_REUSEPORT).

    Not listening yet: uvicorn calls ``listen()`` once the app's lifespan has loaded the model, so
    the kernel sends a (re)starting worker no connection before it can answer.
    """
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def _worker_main(env: dict[str, str], host: str, port: int, uvicorn_kwargs: dict[str, Any]) -> None:
    """One worker process: its own socket, one uvicorn server (handles SIGTERM gracefully)."""
    import uvicorn

    os.environ.update(env)
    sock = bind_reuseport(host, port)
    uvicorn.Server(uvicorn.Config(**uvicorn_kwargs)).run(sockets=[sock])


class Supervisor:
    """Runs ``workers`` processes of :func:`_worker_main` until SIGINT/SIGTERM."""

    def __init__(
        self, workers: int, host: str, port: int, uvicorn_kwargs: dict[str, Any], env: dict[str, str] | None = None
    ) -> None:
        self.workers, self.host, self.port = workers, host, port
        self.uvicorn_kwargs = uvicorn_kwargs
        self.env = dict(env if env is not None else os.environ)
        self._ctx = mp.get_context("spawn")  # a clean interpreter per worker: no torch/ray state forked
        self._stop = threading.Event()
        self._restarts: deque[float] = deque()

    def _start(self) -> BaseProcess:
        proc = self._ctx.Process(
            target=_worker_main,
            args=(self.env, self.host, self.port, self.uvicorn_kwargs),
            name="recsys-serve-worker",
            daemon=False,
        )
        proc.start()
        return proc

    def _request_stop(self, signum: int, _frame: FrameType | None) -> None:
        log.info("received %s: stopping %d worker(s)", signal.Signals(signum).name, self.workers)
        self._stop.set()

    def run(self, poll_s: float = 0.5) -> int:
        """Start the workers and watch them; the exit code (0: stopped by a signal, 1: gave up)."""
        previous = {s: signal.signal(s, self._request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
        procs = [self._start() for _ in range(self.workers)]
        code = 0
        try:
            while not self._stop.wait(poll_s):
                for i, proc in enumerate(procs):
                    if proc.is_alive():
                        continue
                    now = time.monotonic()
                    while self._restarts and now - self._restarts[0] > RESTART_WINDOW_S:
                        self._restarts.popleft()
                    if len(self._restarts) >= RESTART_LIMIT:
                        log.error(
                            "worker %d exited with code %s; %d restarts in the last %.0f s: giving up",
                            proc.pid,
                            proc.exitcode,
                            len(self._restarts),
                            RESTART_WINDOW_S,
                        )
                        code = 1
                        self._stop.set()
                        break
                    log.warning("worker %d exited with code %s: starting a new one", proc.pid, proc.exitcode)
                    self._restarts.append(now)
                    procs[i] = self._start()
        finally:
            self._shutdown(procs)
            for s, handler in previous.items():
                signal.signal(s, handler)
        return code

    @staticmethod
    def _shutdown(procs: list[BaseProcess]) -> None:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()  # SIGTERM: uvicorn finishes in-flight requests, runs the lifespan shutdown
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for proc in procs:
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                log.warning("worker %d did not stop in %.0f s: killing it", proc.pid, STOP_TIMEOUT_S)
                proc.kill()
                proc.join()
