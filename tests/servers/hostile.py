"""A loopback HTTP/1.1 server whose every byte a test scripts: slow, huge, broken or nosy.

``HostileServer(answer)`` calls ``answer(request, wire)`` for each request it reads;
``wire`` sends bytes at once (:meth:`Wire.send`), one at a time with a pause
(:meth:`Wire.drip`), or a whole answer (:meth:`Wire.answer`). What the server received is in
``requests``. Every loop ends when the server stops, so no test waits on a stuck thread.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class RawRequest:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes
    raw: bytes = b""

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    def json(self):
        return json.loads(self.body) if self.body else None


@dataclass
class Wire:
    sock: socket.socket
    stopping: threading.Event
    sent: int = 0
    closed: bool = field(default=False)

    def send(self, data: bytes) -> bool:
        try:
            self.sock.sendall(data)
        except OSError:
            self.closed = True
            return False
        self.sent += len(data)
        return True

    def drip(self, data: bytes, interval: float) -> bool:
        """One byte every ``interval`` seconds, until done, the client hangs up, or stop."""
        for i in range(len(data)):
            if self.stopping.is_set() or not self.send(data[i:i + 1]):
                return False
            self.stopping.wait(interval)
        return True

    def answer(self, status: int, body: bytes | str | dict | list | None = b"",
               content_type: str = "application/scim+json", headers: dict | None = None) -> bool:
        if isinstance(body, (dict, list)) or body is None:
            body = json.dumps(body).encode()
        elif isinstance(body, str):
            body = body.encode()
        head = [f"HTTP/1.1 {status} X", f"Content-Type: {content_type}",
                f"Content-Length: {len(body)}"]
        head += [f"{k}: {v}" for k, v in (headers or {}).items()]
        return self.send(("\r\n".join(head) + "\r\n\r\n").encode() + body)


class HostileServer:
    def __init__(self, answer: Callable[[RawRequest, Wire], None]):
        self.answer = answer
        self.requests: list[RawRequest] = []
        self.stopping = threading.Event()
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self._listener.settimeout(0.1)
        self.port = self._listener.getsockname()[1]
        self._threads: list[threading.Thread] = []

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/scim/v2"

    def __enter__(self) -> "HostileServer":
        thread = threading.Thread(target=self._accept, daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        for thread in list(self._threads):
            thread.join(timeout=5)
        self._listener.close()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                sock, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(sock,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self, sock: socket.socket) -> None:
        sock.settimeout(0.2)
        buffer = b""
        with sock:
            while not self.stopping.is_set():
                request, buffer = self._read(sock, buffer)
                if request is None:
                    return
                self.requests.append(request)
                wire = Wire(sock, self.stopping)
                self.answer(request, wire)
                if wire.closed or request.headers.get("connection", "").lower() == "close":
                    return

    def _read(self, sock: socket.socket, buffer: bytes):
        while b"\r\n\r\n" not in buffer:
            chunk = self._recv(sock)
            if not chunk:
                return None, b""
            buffer += chunk
        head, _, rest = buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0") or 0)
        while len(rest) < length:
            chunk = self._recv(sock)
            if not chunk:
                return None, b""
            rest += chunk
        body, rest = rest[:length], rest[length:]
        return RawRequest(method, target, headers, body, head + b"\r\n\r\n" + body), rest

    def _recv(self, sock: socket.socket) -> bytes:
        while not self.stopping.is_set():
            try:
                return sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return b""
        return b""


def list_response(resources: list | None = None) -> dict:
    resources = resources or []
    return {"schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
            "totalResults": len(resources), "startIndex": 1, "itemsPerPage": len(resources),
            "Resources": resources}


def elapsed(action: Callable[[], object]) -> tuple[float, BaseException | None]:
    """How long ``action`` took, and what it raised (if anything)."""
    started = time.monotonic()
    try:
        action()
    except BaseException as exc:  # noqa: BLE001 - the test inspects it
        return time.monotonic() - started, exc
    return time.monotonic() - started, None
