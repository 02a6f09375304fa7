"""A real Redis server for a test: ``redis-server`` on a free port in a temporary directory, no persistence."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from serving.net import free_port

REDIS_SERVER = "redis-server"


class RedisServer:
    """``redis-server --port <free> --save '' --appendonly no`` in ``workdir``; ``url`` (without the password) once it
    answers PING. ``password``: the server requires it (``--requirepass``)."""

    def __init__(self, workdir: Path, password: str | None = None) -> None:
        binary = shutil.which(REDIS_SERVER)
        if binary is None:
            pytest.skip("redis-server is not installed (apt-get install redis-server; .ci/run installs it)")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        workdir.mkdir(parents=True, exist_ok=True)
        self.log = workdir / "redis.log"
        cmd = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        if password is not None:
            cmd += ["--requirepass", password]
        self.proc = subprocess.Popen([*cmd, "--dir", str(workdir)], stdout=self.log.open("w"), stderr=subprocess.STDOUT)
        import redis

        client = redis.Redis.from_url(self.url, password=password)
        deadline = time.time() + 20
        while True:
            assert self.proc.poll() is None, f"redis-server exited {self.proc.returncode}:\n{self.log.read_text()}"
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert time.time() < deadline, f"redis-server not answering:\n{self.log.read_text()}"
                time.sleep(0.05)
        client.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
