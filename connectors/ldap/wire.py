"""Receiving search results: ldap3 keeps the connection, we take the entries off the socket.

ldap3 opens the connection, does TLS, the bind and the controls, sends every request and
decodes every message that is not a search entry. What it does per message on the way in
(a receive loop that concatenates and re-slices its buffer and computes each message's size
in a separate call, then a generic BER walk) costs more than the server needs to send the
entry, and a full read receives tens of thousands of them; slapd sends one TLS record per
entry. So on the synchronous strategy :class:`Receiver` replaces ldap3's ``_get_response``:
one loop reads the socket, cuts it into messages and decodes search entries itself, with
:func:`.decoding.decode_entry`, or, while a search has a :class:`.projection.Projection`,
straight into what a record needs. Errors are ldap3's own: a failed receive closes the
connection and raises ``LDAPSocketReceiveError``, a closed one is "session terminated".
"""

from __future__ import annotations

import ldap3

from .decoding import decode_entry
from .projection import Projection

DISCONNECTION_NOTICE = "1.3.6.1.4.1.1466.20036"      # RFC 4511 4.4.1
RECEIVE_SIZE = 65536


def install_receiver(conn: ldap3.Connection) -> None:
    """Take over receiving on ``conn``: only on the real synchronous strategy (the mock
    builds responses its own way) and only without SASL (whose signed messages ldap3's
    receive loop has to check); elsewhere ldap3 keeps doing it."""
    from ldap3.strategy.mockBase import MockBaseStrategy
    from ldap3.strategy.sync import SyncStrategy

    strategy = conn.strategy
    if (not isinstance(strategy, SyncStrategy) or isinstance(strategy, MockBaseStrategy)
            or conn.sasl_mechanism):
        return
    receiver = Receiver(strategy)
    strategy._get_response = receiver.get_response
    strategy.receiver = receiver


def receiver_of(conn: ldap3.Connection) -> Receiver | None:
    return getattr(conn.strategy, "receiver", None)


class Receiver:
    """``projection``: set by a search that wants its entries projected (and cleared when
    it has them); entries come as ``{"type": "searchResEntry", "dn", "raw_dn",
    "projected"}`` then, or in the lean form when the projection leaves one to it."""

    def __init__(self, strategy):
        self.strategy = strategy
        self.projection: Projection | None = None
        self._pending = b""        # the start of a message not yet complete

    def get_response(self, message_id: int, timeout=None):
        """ldap3's SyncStrategy._get_response (2.9.1): the responses to ``message_id`` up to
        and including its final one, then RESPONSE_COMPLETE."""
        from ldap3.core.exceptions import LDAPSocketReceiveError, communication_exception_factory
        from ldap3.strategy.base import RESPONSE_COMPLETE, SESSION_TERMINATED_BY_SERVER
        from ldap3.utils.asn1 import decode_message_fast

        strategy = self.strategy
        connection = strategy.connection
        recv = connection.socket.recv
        project = self.projection
        responses: list = []
        buffer = self._pending
        self._pending = b""
        while True:
            try:
                data = recv(RECEIVE_SIZE)
            except OSError as exc:
                connection.last_error = f"error receiving data: {exc}"
                try:
                    strategy.close()
                except Exception:            # closing what may already be gone
                    pass
                raise communication_exception_factory(
                    LDAPSocketReceiveError, type(exc)(str(exc)))(connection.last_error) from exc
            if not data:
                return SESSION_TERMINATED_BY_SERVER
            buffer = buffer + data if buffer else data
            size = len(buffer)
            at = 0
            while size - at > 2:
                n = buffer[at + 1]
                if n < 0x80:
                    end = at + 2 + n
                else:
                    k = n & 0x7F
                    if not k or k > 4:
                        raise LDAPSocketReceiveError("a message of indefinite or impossible "
                                                     "length")
                    if at + 2 + k > size:
                        break                # its length is not all here yet
                    end = at + 2 + k + int.from_bytes(buffer[at + 2:at + 2 + k], "big")
                if end > size:
                    break
                message = buffer if (at == 0 and end == size) else buffer[at:end]
                at = end
                if project is not None:
                    entry = project(message)
                    if entry is not None:
                        mid, raw_dn, dn, projected = entry
                        if mid != message_id:
                            raise LDAPSocketReceiveError(f"unexpected LDAP message id {mid}")
                        responses.append({"type": "searchResEntry", "raw_dn": raw_dn, "dn": dn,
                                          "projected": projected})
                        continue
                entry = decode_entry(message)
                if entry is not None:
                    mid, response = entry
                else:
                    decoded = decode_message_fast(message)
                    mid = int(decoded["messageID"])
                    response = strategy.decode_response_fast(decoded)
                if mid == message_id:
                    responses.append(response)
                    if response["type"] not in ("searchResEntry", "searchResRef",
                                                "intermediateResponse"):
                        self._pending = buffer[at:]
                        responses.append(RESPONSE_COMPLETE)
                        return responses
                elif mid == 0 and response.get("responseName") == DISCONNECTION_NOTICE:
                    return SESSION_TERMINATED_BY_SERVER
                else:
                    raise LDAPSocketReceiveError(f"unexpected LDAP message id {mid}")
            buffer = buffer[at:] if at else buffer
