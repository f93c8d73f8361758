"""Free loopback ports for tests and local runs."""

from __future__ import annotations

import random
import socket
from pathlib import Path

# Where the kernel takes ports for outgoing connections, when /proc does not say.
_DEFAULT_EPHEMERAL_LOW = 32768
_LOWEST = 10000


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return _DEFAULT_EPHEMERAL_LOW


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now; see `free_ports`."""
    return free_ports(1, host)[0]


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct TCP ports that are free on ``host`` right now.

    They are chosen below the kernel's ephemeral range, so no outgoing
    connection (this machine makes many during a test run) can take one
    between this check and the caller's bind; the ports are held open
    together while they are chosen, so none repeats.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    low = _ephemeral_low()
    candidates = (
        random.sample(range(_LOWEST, low), k=min(low - _LOWEST, 200))
        if low - _LOWEST >= 100
        else []
    )
    held: list[socket.socket] = []
    try:
        for port in candidates:
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.bind((host, port))
            except OSError:
                sock.close()
                continue
            held.append(sock)
            if len(held) == count:
                break
        while len(held) < count:  # no room below the ephemeral range: the kernel's choice
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.bind((host, 0))
            held.append(sock)
        return [int(sock.getsockname()[1]) for sock in held]
    finally:
        for sock in held:
            sock.close()


def host_port(host: str, port: int) -> str:
    """Format ``host:port``, bracketing IPv6 literals."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
