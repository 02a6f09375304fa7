"""Ports: check that the service can listen where it is told to, or find a free one (tests, benchmarks)."""

from __future__ import annotations

import socket

from recsys.errors import ConfigError


def check_port(host: str, port: int) -> int:
    """The port ``host:port`` can be bound on (``port`` 0: a free one the kernel picks), checked now.

    Raises ConfigError (``serve.port: cannot listen on ...``) when it cannot be bound.
    """
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise ConfigError(f"serve.port: cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        port_bound: int = sock.getsockname()[1]
        return port_bound


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on at ``host`` now (for starting a server in a test or a benchmark)."""
    return check_port(host, 0)
