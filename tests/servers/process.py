"""A server the tests start as a child process: waiting for its ports, stopping it by its pid."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Iterable


def ports_open(process: subprocess.Popen, address: str, ports: Iterable[int], timeout: float,
               poll: float = 0.1) -> bool:
    """Wait until every port accepts a connection (True), the process exits or ``timeout``
    seconds pass (False)."""
    ports = list(ports)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            for port in ports:
                socket.create_connection((address, port), timeout=0.5).close()
            return True
        except OSError:
            time.sleep(poll)
    return False


def stop(process: subprocess.Popen | None) -> None:
    """SIGTERM to our own child, SIGKILL after 10 s."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
