"""Loopback ports for servers the tests start themselves."""

import random
import socket
from pathlib import Path

EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LOWEST_PORT = 10000
BROWSER_REFUSED = {10080}  # Chromium's one restricted port above LOWEST_PORT (ERR_UNSAFE_PORT)


def free_port() -> int:
    """A port free on 127.0.0.1, below the kernel's range for outgoing connections where it is known.

    A server that binds seconds after its port is chosen (the model server imports torch first)
    could otherwise lose it to one of the many client connections the tests make meanwhile.
    """
    first_ephemeral = int(EPHEMERAL_RANGE.read_text().split()[0]) if EPHEMERAL_RANGE.exists() else 0
    if first_ephemeral < LOWEST_PORT + 1000:
        return _bound_port(0)
    while True:
        port = random.randrange(LOWEST_PORT, first_ephemeral)
        if port in BROWSER_REFUSED:
            continue
        try:
            return _bound_port(port)
        except OSError:
            continue  # in use


def _bound_port(port: int) -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        return sock.getsockname()[1]
