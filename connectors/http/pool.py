"""Connections to one remote: a pool of single-connection pools, one per request in flight.

httpcore's :class:`~httpcore.ConnectionPool` walks every connection it holds twice per request
(when it is sent and when its answer is closed), and checks each idle one for a dropped socket
on the way: with 8 workers sharing a pool of 8, about a tenth of the agent's CPU per request.
:class:`Lanes` keeps the same bound and the same per-connection care (httpcore's own pool, of
one connection, does the keep-alive expiry, the dropped-socket check and the reconnect), but a
request takes a whole lane and gives it back when its answer is closed, so each request looks
at one connection only. The most recently used lane goes first (its connection is the warmest);
a lane left idle past the keep-alive expiry finds its connection expired when next taken and
opens a new one, so at most ``size`` sockets are ever held, as with httpcore's pool.
"""

from __future__ import annotations

import threading
import time
import typing
from collections.abc import Callable, Iterator

import httpcore


class Lanes:
    """At most ``size`` requests in flight, each on a lane of its own (``make()`` builds one:
    an :class:`httpcore.ConnectionPool` of one connection). A request beyond ``size`` waits for
    a lane up to the request's ``pool`` timeout, then fails as :class:`httpcore.PoolTimeout`,
    as httpcore's pool does."""

    def __init__(self, make: Callable[[], httpcore.ConnectionPool], size: int):
        self._make = make
        self._size = size
        self._idle: list[httpcore.ConnectionPool] = []     # a stack: the last returned first
        self._lanes: list[httpcore.ConnectionPool] = []
        self._closed = False
        self._changed = threading.Condition()

    @property
    def connections(self) -> list:
        """Every connection held (httpcore's ``ConnectionPool.connections``), for tests."""
        return [c for lane in list(self._lanes) for c in lane.connections]

    def handle_request(self, request: httpcore.Request) -> httpcore.Response:
        lane = self._take(request.extensions.get("timeout", {}).get("pool"))
        try:
            response = lane.handle_request(request)
        except BaseException:
            self._give_back(lane)
            raise
        response.stream = _Returned(response.stream, lambda: self._give_back(lane))
        return response

    def _take(self, timeout: float | None) -> httpcore.ConnectionPool:
        until = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            while not self._idle and len(self._lanes) >= self._size:
                left = None if until is None else until - time.monotonic()
                if (left is not None and left <= 0) or not self._changed.wait(left):
                    raise httpcore.PoolTimeout("no connection came free in time")
            if self._idle:
                return self._idle.pop()
            lane = self._make()
            self._lanes.append(lane)
            return lane

    def _give_back(self, lane: httpcore.ConnectionPool) -> None:
        with self._changed:
            if self._closed:
                lane.close()
                return
            self._idle.append(lane)
            self._changed.notify()

    def close(self) -> None:
        with self._changed:
            self._closed = True
            lanes, self._lanes, self._idle = self._lanes, [], []
            self._changed.notify_all()
        for lane in lanes:
            lane.close()

    def __enter__(self) -> Lanes:
        return self

    def __exit__(self, *exc_info: typing.Any) -> None:
        self.close()


class _Returned:
    """An answer's body; closing it hands its lane back (once)."""

    def __init__(self, stream: typing.Iterable[bytes], give_back: Callable[[], None]):
        self._stream = stream
        self._give_back: Callable[[], None] | None = give_back

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._stream
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._give_back is None:
            return
        give_back, self._give_back = self._give_back, None
        try:
            close = getattr(self._stream, "close", None)
            if close is not None:
                close()
        finally:
            give_back()
