"""A real OpenLDAP ``slapd`` for tests and benchmarks, started from a temporary ``slapd.conf``.

Nothing of the system instance is used: the config, the MDB database, the pid file and the TLS
material all live in a temporary directory; only the world-readable schemas in
``/etc/ldap/schema`` and the modules in ``/usr/lib/ldap`` are read (sources.md §3.10). slapd
runs in the foreground (``-d 0``) as a child process on 127.0.0.1 and a free port; readiness is
detected by polling the port, never by sleeping a fixed time. Works as root and as any user.

TLS material is generated in-process with ``cryptography``: a CA, and a server certificate for
``localhost`` / ``127.0.0.1`` signed by it. :func:`make_ca` also makes an unrelated CA for the
"wrong CA" tests.

Typical use::

    with Slapd(tmp_path, tls=True) as server:
        server.add_ldif(LDIF)             # ldapadd (C client): fast
        conn = server.admin_connection()  # ldap3, bound as the root DN
        ...
        server.kill()                     # the connection drops mid-read
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.servers.process import ports_open, stop

SLAPD = "/usr/sbin/slapd"
SLAPADD = "/usr/sbin/slapadd"
SCHEMA_DIR = Path("/etc/ldap/schema")
MODULE_DIR = Path("/usr/lib/ldap")
SUFFIX = "dc=example,dc=test"
ADMIN_DN = f"cn=admin,{SUFFIX}"
ADMIN_PASSWORD = "secret"
# A non-root reader: the root DN is exempt from size limits, a service account is not.
READER_DN = f"cn=reader,{SUFFIX}"
READER_PASSWORD = "reader-secret"


def available() -> bool:
    """True when slapd and the LDAP client tools are installed."""
    return os.path.exists(SLAPD) and shutil.which("ldapadd") is not None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------
# TLS material


@dataclass(frozen=True)
class CertificateAuthority:
    cert_file: Path
    key: object          # a cryptography private key
    cert: object         # a cryptography certificate


def make_ca(directory: Path, name: str = "Test CA") -> CertificateAuthority:
    """A self-signed CA written to ``directory/<name>.crt`` (PEM)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(subject).issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=True, crl_sign=True,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_file = directory / f"{name.replace(' ', '_').lower()}.crt"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return CertificateAuthority(cert_file, key, cert)


def issue_server_certificate(ca: CertificateAuthority, directory: Path,
                             names: tuple[str, ...] = ("localhost",),
                             addresses: tuple[str, ...] = ("127.0.0.1",)) -> tuple[Path, Path]:
    """A server certificate signed by ``ca`` with the given SANs; returns (cert, key) paths."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    sans = [x509.DNSName(n) for n in names] + [x509.IPAddress(ipaddress.ip_address(a))
                                                for a in addresses]
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
                           critical=False)
            .sign(ca.key, hashes.SHA256()))
    cert_file, key_file = directory / "server.crt", directory / "server.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_file.chmod(0o600)
    return cert_file, key_file


# ---------------------------------------------------------------------------------------------
# LDIF


def ldif_entry(dn: str, attributes: dict[str, object]) -> str:
    """One LDIF record; values that are not plain ASCII (or start/end awkwardly) are base64
    encoded as RFC 2849 requires, bytes always are. A list value gives several lines."""
    lines = [_ldif_line("dn", dn)]
    for name, value in attributes.items():
        for v in value if isinstance(value, (list, tuple)) else [value]:
            lines.append(_ldif_line(name, v))
    return "\n".join(lines) + "\n\n"


def _ldif_line(name: str, value: object) -> str:
    import base64

    if isinstance(value, bytes):
        return f"{name}:: {base64.b64encode(value).decode()}"
    text = str(value)
    safe = (text.isascii() and text.isprintable() and not text.startswith((" ", ":", "<"))
            and not text.endswith(" "))
    if safe:
        return f"{name}: {text}"
    return f"{name}:: {base64.b64encode(text.encode()).decode()}"


# ---------------------------------------------------------------------------------------------
# The server


BASE_LDIF = f"""\
dn: {SUFFIX}
objectClass: dcObject
objectClass: organization
dc: example
o: Example

dn: {READER_DN}
objectClass: simpleSecurityObject
objectClass: organizationalRole
cn: reader
userPassword: {READER_PASSWORD}

dn: ou=people,{SUFFIX}
objectClass: organizationalUnit
ou: people

dn: ou=groups,{SUFFIX}
objectClass: organizationalUnit
ou: groups
"""


class Slapd:
    """One slapd process. ``size_limit`` sets the server's ``sizelimit`` (paged searches stay
    unlimited, as with AD's MaxPageSize); ``database_config`` adds lines such as ``limits``
    to the database section; ``tls`` adds a CA-signed certificate and an
    ``ldaps://`` listener next to ``ldap://`` (which then also offers StartTLS)."""

    def __init__(self, workdir: Path, *, tls: bool = False, size_limit: int | None = None,
                 seed_base: bool = True, database_config: str = ""):
        self.dir = Path(workdir)
        self.tls = tls
        self.size_limit = size_limit
        self.seed_base = seed_base
        self.database_config = database_config    # extra lines for the mdb database section
        self.port = 0
        self.ldaps_port = 0
        self.ca: CertificateAuthority | None = None
        self.process: subprocess.Popen | None = None
        self._configured = False

    # -- locations ------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    @property
    def ldaps_url(self) -> str:
        return f"ldaps://localhost:{self.ldaps_port}"

    @property
    def ca_file(self) -> Path:
        assert self.ca is not None, "start the server with tls=True"
        return self.ca.cert_file

    # -- lifecycle ------------------------------------------------------------------------
    def configure(self) -> None:
        """Write slapd.conf (and TLS files) and create the empty database; idempotent."""
        if self._configured:
            return
        for sub in ("data", "run", "tls"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        tls_lines = ""
        if self.tls:
            self.ca = make_ca(self.dir / "tls", "Test CA")
            cert, key = issue_server_certificate(self.ca, self.dir / "tls")
            tls_lines = (f"TLSCACertificateFile {self.ca.cert_file}\n"
                         f"TLSCertificateFile {cert}\nTLSCertificateKeyFile {key}\n")
        limit = "sizelimit unlimited\n"    # slapd's default is 500, paged searches included
        if self.size_limit is not None:
            # Plain searches stop at the limit; paged ones may go on (AD behaves the same way).
            limit = (f"sizelimit size.soft={self.size_limit} size.hard={self.size_limit} "
                     f"size.prtotal=unlimited\n")
        schemas = "".join(f"include {SCHEMA_DIR / s}.schema\n"
                          for s in ("core", "cosine", "inetorgperson", "nis"))
        (self.dir / "slapd.conf").write_text(f"""\
{schemas}pidfile {self.dir}/run/slapd.pid
argsfile {self.dir}/run/slapd.args
{tls_lines}{limit}modulepath {MODULE_DIR}
moduleload back_mdb
moduleload memberof
database mdb
maxsize 1073741824
dbnosync
suffix "{SUFFIX}"
rootdn "{ADMIN_DN}"
rootpw {ADMIN_PASSWORD}
directory {self.dir}/data
index objectClass eq
index entryUUID eq
index member eq
index modifyTimestamp eq
index uid eq
index employeeType eq
access to attrs=userPassword by anonymous auth by * none
access to * by * read
overlay memberof
memberof-group-oc groupOfNames
memberof-member-ad member
memberof-memberof-ad memberOf
memberof-refint TRUE
{self.database_config}
""")
        self._configured = True

    def slapadd(self, ldif: str | Path) -> None:
        """Bulk-load LDIF offline (before :meth:`start`): far faster than adds over the wire."""
        self.configure()
        assert self.process is None, "slapadd needs a stopped server"
        path = Path(ldif) if isinstance(ldif, Path) else self._write_tmp(ldif)
        subprocess.run([SLAPADD, "-q", "-f", str(self.dir / "slapd.conf"), "-l", str(path)],
                       check=True, capture_output=True, timeout=600)

    def start(self, timeout: float = 15.0) -> "Slapd":
        self.configure()
        fresh = not any((self.dir / "data").iterdir())
        for attempt in range(3):      # a free port can be taken between probe and bind
            self.port = self.port or free_port()
            self.ldaps_port = (self.ldaps_port or free_port()) if self.tls else 0
            urls = f"ldap://127.0.0.1:{self.port}/"
            if self.tls:
                urls += f" ldaps://127.0.0.1:{self.ldaps_port}/"
            log = open(self.dir / "slapd.log", "ab")
            self.process = subprocess.Popen([SLAPD, "-f", str(self.dir / "slapd.conf"),
                                             "-h", urls, "-d", "0"],
                                            stdout=log, stderr=subprocess.STDOUT)
            log.close()
            if self._wait_ready(timeout):
                break
            self.stop()
            self.port = self.ldaps_port = 0
        else:
            raise RuntimeError(f"slapd did not start; see {self.dir / 'slapd.log'}")
        if fresh and self.seed_base:
            self.add_ldif(BASE_LDIF)
        return self

    def _wait_ready(self, timeout: float) -> bool:
        ports = [self.port] + ([self.ldaps_port] if self.tls else [])
        return ports_open(self.process, "127.0.0.1", ports, timeout, poll=0.05)

    def stop(self) -> None:
        """Stop slapd cleanly (SIGTERM, then SIGKILL after 10 s)."""
        stop(self.process)
        self.process = None

    def kill(self) -> None:
        """Kill slapd at once, as a crash or a network cut would: open connections drop."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def __enter__(self) -> "Slapd":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- data ---------------------------------------------------------------------------
    def _write_tmp(self, text: str) -> Path:
        path = self.dir / f"seed-{time.monotonic_ns()}.ldif"
        path.write_text(text, encoding="utf-8")
        return path

    def ldap_tool(self, tool: str, ldif: str, *extra: str) -> None:
        """Run ``ldapadd``/``ldapmodify``/``ldapdelete`` as the root DN on ``ldif``."""
        path = self._write_tmp(ldif)
        proc = subprocess.run([tool, "-x", "-H", self.url, "-D", ADMIN_DN, "-w", ADMIN_PASSWORD,
                               *extra, "-f", str(path)],
                              capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            raise RuntimeError(f"{tool} failed ({proc.returncode}): {proc.stderr.strip()}")
        path.unlink()

    def add_ldif(self, ldif: str) -> None:
        self.ldap_tool("ldapadd", ldif)

    def modify_ldif(self, ldif: str) -> None:
        self.ldap_tool("ldapmodify", ldif)

    def admin_connection(self):
        """An ldap3 Connection bound as the root DN (for seeding and changing entries)."""
        import ldap3

        return ldap3.Connection(ldap3.Server(self.url, get_info=ldap3.NONE), ADMIN_DN,
                                ADMIN_PASSWORD, auto_bind=True, raise_exceptions=True)
