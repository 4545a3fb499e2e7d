"""MemoryTls, the TLS under every LDAP connection: it verifies as an SSLSocket does and reads
the same bytes. Against a small TLS server on loopback (a thread) that writes one TLS record
per message, as slapd does per search entry; the slapd tests cover it with ldap3 on top."""

from __future__ import annotations

import socket
import ssl
import threading

import pytest

from connectors.ldap.tls import MemoryTls, verifying_context
from tests.servers.slapd import issue_server_certificate, make_ca

RECORDS = [bytes([i % 256]) * (1 + i * 7 % 900) for i in range(300)]


@pytest.fixture()
def tls_server(tmp_path):
    """(port, CA file): accepts one connection, reads a request, answers with RECORDS one
    TLS record each, then closes with close_notify."""
    ca = make_ca(tmp_path / "ca")
    cert, key = issue_server_certificate(ca, tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)

    def serve():
        try:
            conn, _ = listener.accept()
            with context.wrap_socket(conn, server_side=True) as tls:
                tls.settimeout(10)
                assert tls.recv(100) == b"hello"
                for record in RECORDS:
                    tls.sendall(record)
                tls.unwrap()
        except (OSError, AssertionError):
            pass                                   # the client refused us: its test says so

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1], ca.cert_file
    listener.close()
    thread.join(10)


def connect(port, ca_file, host="localhost"):
    plain = socket.create_connection(("127.0.0.1", port), timeout=10)
    tls = MemoryTls(plain, verifying_context(ca_file), host)
    try:
        tls.do_handshake()
    except BaseException:
        plain.close()
        raise
    return tls


def test_reads_what_was_sent_and_then_the_end(tls_server):
    port, ca_file = tls_server
    tls = connect(port, ca_file)
    tls.sendall(b"hello")
    received = b""
    while chunk := tls.recv(65536):
        received += chunk
    assert received == b"".join(RECORDS)
    assert tls.recv(65536) == b""                  # closed stays closed
    assert tls.version() in ("TLSv1.2", "TLSv1.3") and tls.getpeercert()
    tls.close()


def test_the_host_name_is_checked(tls_server):
    port, ca_file = tls_server
    with pytest.raises(ssl.SSLCertVerificationError, match="match|mismatch"):
        connect(port, ca_file, host="elsewhere.example")


def test_the_certificate_is_checked(tls_server, tmp_path):
    port, _ = tls_server
    with pytest.raises(ssl.SSLCertVerificationError):
        connect(port, make_ca(tmp_path / "other", "Other CA").cert_file)


def test_a_silent_server_times_out(tmp_path):
    listener = socket.create_server(("127.0.0.1", 0))
    try:
        plain = socket.create_connection(listener.getsockname(), timeout=0.2)
        tls = MemoryTls(plain, verifying_context(make_ca(tmp_path).cert_file), "localhost")
        with pytest.raises(TimeoutError):
            tls.do_handshake()                     # the socket's timeout covers the handshake
        plain.close()
    finally:
        listener.close()
