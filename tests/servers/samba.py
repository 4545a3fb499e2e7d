"""A real Active Directory domain controller for tests: Samba's AD DC on a loopback address.

Provisioned once per test session from Debian's packages (``samba``, ``samba-ad-dc``,
``samba-ad-provision``, ``ldb-tools``, ``ldap-utils``) into a temporary directory, then run as
one foreground process (``samba -F --no-process-group -M single``) that only serves LDAP
(``server services = ldap``) and is stopped by its pid. Nothing of the system's Samba is used:
``smb.conf``, the databases, the pid file, the sockets and the logs all live in the directory.

Facts that shaped it (checked against Samba 4.17):

* Samba's LDAP ports are fixed (389, 636 and the global catalog's 3268/3269), so each instance
  gets its own loopback address (``127.x.y.z``; all of 127/8 is loopback on Linux) and binds
  only there (``interfaces = ADDRESS/8``, ``bind interfaces only``): two sessions, or a
  directory server already on 127.0.0.1:389, do not collide. Binding below 1024 needs root,
  and so does Samba's AD DC.
* A simple bind over plain ``ldap://`` is refused ("transport encryption required"); binds go
  over LDAPS or StartTLS with a certificate from a CA generated here, for ``localhost``,
  ``127.0.0.1`` and the instance's address (Samba's own self-signed one names the host).
* Bulk data loads fastest as one LDIF through ``ldapmodify -a`` over LDAPS (about 150-200
  adds/s on two busy cores); ``ldbadd`` on the database directly is slower.
* Samba does not cap a paged search's pages at MaxPageSize, answers plain searches without a
  size limit, and repeats the same opaque paging cookie on every page; it returns ranges of a
  multi-valued attribute only when asked for a bounded range (``member;range=0-1499``), never
  on its own as Windows does past MaxValRange.

Typical use (``tests/conftest.py`` provides one per session as the ``samba_dc`` fixture)::

    dc = SambaDC(tmp_path).start()
    dc.add_ldif(LDIF)                     # ldapmodify -a over LDAPS, as Administrator
    conn = dc.admin_connection()          # ldap3, bound as Administrator, CA verified
    dc.stop()
"""

from __future__ import annotations

import base64
import os
import random
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

from tests.servers.process import ports_open, stop
from tests.servers.slapd import (CertificateAuthority, issue_server_certificate, ldif_entry,
                                 make_ca)

REALM = "CORP.EXAMPLE.TEST"
DOMAIN = "CORP"
BASE = "DC=corp,DC=example,DC=test"
UPN_SUFFIX = "corp.example.test"
ADMIN = f"Administrator@{UPN_SUFFIX}"
ADMIN_PASSWORD = "Adm1n-Passw0rd!"
# Two service accounts, both ordinary domain users: what the connector needs and no more.
# svc-deleted is also allowed to list the Deleted Objects container (List Contents + Read
# Property, the grant Microsoft documents for non-administrators), svc-split is not.
SVC = "svc-split"
SVC_DN = f"CN={SVC},CN=Users,{BASE}"
SVC_UPN = f"{SVC}@{UPN_SUFFIX}"
SVC_PASSWORD = "Svc-Spl1t-Passw0rd!"
SVC_DELETED = "svc-deleted"
SVC_DELETED_UPN = f"{SVC_DELETED}@{UPN_SUFFIX}"
SVC_DELETED_PASSWORD = "Svc-D3leted-Passw0rd!"
DELETED_OBJECTS = f"CN=Deleted Objects,{BASE}"

SAMBA = "/usr/sbin/samba"
SAMBA_TOOL = "/usr/bin/samba-tool"
PROVISION_DATA = Path("/usr/share/samba/setup/ad-schema")
REQUIRED_TOOLS = ("ldapmodify", "ldapsearch", "ldbsearch", "ldbmodify")
PORTS = (389, 636, 3268, 3269)


def unavailable_reason() -> str | None:
    """Why Samba's AD DC cannot run here, or None when it can."""
    missing = [p for p in (SAMBA, SAMBA_TOOL) if not os.path.exists(p)]
    missing += [t for t in REQUIRED_TOOLS if shutil.which(t) is None]
    if missing:
        return (f"Samba AD DC not installed (missing {', '.join(missing)}; Debian: samba "
                f"samba-ad-dc samba-ad-provision ldb-tools winbind ldap-utils)")
    if not PROVISION_DATA.is_dir():
        return f"Samba's provisioning data is not installed ({PROVISION_DATA}: samba-ad-provision)"
    if os.geteuid() != 0:
        return "Samba's AD DC must run as root (it binds the fixed LDAP ports 389 and 636)"
    return None


def unicode_pwd(password: str) -> bytes:
    """The value AD wants in ``unicodePwd``: the password in double quotes, UTF-16LE."""
    return f'"{password}"'.encode("utf-16-le")


def free_loopback_address() -> str:
    """A 127.x.y.z address whose LDAP ports are all free (bounded: 50 tries)."""
    rng = random.Random()
    for _ in range(50):
        address = f"127.{rng.randint(1, 254)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
        try:
            for port in PORTS:
                with socket.socket() as s:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    s.bind((address, port))
        except OSError:
            continue
        return address
    raise RuntimeError("no free loopback address for Samba's LDAP ports")


class SambaDC:
    """One provisioned domain controller in ``workdir``."""

    def __init__(self, workdir: Path, *, runtime_limit: int = 3600):
        self.dir = Path(workdir)
        self.runtime_limit = runtime_limit    # Samba exits by itself if nobody stops it
        self.address = ""
        self.ca: CertificateAuthority | None = None
        self.process: subprocess.Popen | None = None

    # -- locations ------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"ldaps://{self.address}"

    @property
    def plain_url(self) -> str:                # for StartTLS (and to show plain binds fail)
        return f"ldap://{self.address}"

    @property
    def ca_file(self) -> Path:
        assert self.ca is not None
        return self.ca.cert_file

    @property
    def conf(self) -> Path:
        return self.dir / "etc" / "smb.conf"

    @property
    def sam_ldb(self) -> Path:
        return self.dir / "private" / "sam.ldb"

    def _tool_env(self) -> dict[str, str]:
        # the machine-wide CA variables must not decide what the tools trust
        env = {k: v for k, v in os.environ.items()
               if k not in ("SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE")}
        env.update(LDAPTLS_CACERT=str(self.ca_file), LDAPTLS_REQCERT="demand")
        return env

    # -- lifecycle ------------------------------------------------------------------------
    def provision(self) -> None:
        """``samba-tool domain provision`` with TLS, LDAP only, everything under ``dir``."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self.address = free_loopback_address()
        tls = self.dir / "tls"
        tls.mkdir(exist_ok=True)
        self.ca = make_ca(tls, "Samba Test CA")
        cert, key = issue_server_certificate(self.ca, tls,
                                             addresses=("127.0.0.1", self.address))
        run = self.dir / "run"
        run.mkdir(exist_ok=True)
        options = {
            "interfaces": f"{self.address}/8", "bind interfaces only": "yes",
            "server services": "ldap", "ldb:nosync": "true",
            "tls enabled": "yes", "tls keyfile": key, "tls certfile": cert,
            "tls cafile": self.ca.cert_file,
            "pid directory": run, "ncalrpc dir": run / "ncalrpc",
            "winbindd socket directory": run / "winbindd",
            "ntp signd socket directory": run / "ntp_signd",
            "log file": self.dir / "samba.log", "log level": "1",
        }
        args = [SAMBA_TOOL, "domain", "provision", f"--targetdir={self.dir}",
                f"--realm={REALM}", f"--domain={DOMAIN}", "--server-role=dc",
                "--dns-backend=NONE", "--use-rfc2307", "--host-name=dc1",
                f"--adminpass={ADMIN_PASSWORD}"]
        args += [f"--option={name} = {value}" for name, value in options.items()]
        proc = subprocess.run(args, capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            raise RuntimeError(f"samba-tool domain provision failed ({proc.returncode}): "
                               f"{proc.stderr.strip()[-2000:]}")

    def start(self, timeout: float = 60.0) -> "SambaDC":
        if not self.conf.exists():
            self.provision()
        log = open(self.dir / "samba.out", "ab")
        self.process = subprocess.Popen(
            [SAMBA, "-F", "--no-process-group", "-M", "single", "-s", str(self.conf),
             f"--maximum-runtime={self.runtime_limit}"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        if not self._wait_ready(timeout):
            self.stop()
            raise RuntimeError(f"samba did not start listening on {self.address}:636 within "
                               f"{timeout:.0f}s; see {self.dir / 'samba.log'}")
        return self

    def _wait_ready(self, timeout: float) -> bool:
        return ports_open(self.process, self.address, (389, 636), timeout)

    def stop(self) -> None:
        """SIGTERM to our one process, SIGKILL after 10 s."""
        stop(self.process)
        self.process = None

    def __enter__(self) -> "SambaDC":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- data ---------------------------------------------------------------------------
    def _ldap_tool(self, ldif: str, *extra: str) -> None:
        path = self.dir / f"change-{time.monotonic_ns()}.ldif"
        path.write_text(ldif, encoding="utf-8")
        proc = subprocess.run(["ldapmodify", "-x", "-H", self.url, "-D", ADMIN,
                               "-w", ADMIN_PASSWORD, *extra, "-f", str(path)],
                              capture_output=True, text=True, timeout=600, env=self._tool_env())
        if proc.returncode != 0:
            raise RuntimeError(f"ldapmodify failed ({proc.returncode}): {proc.stderr.strip()}")
        path.unlink()

    def add_ldif(self, ldif: str) -> None:
        """Add every record of ``ldif`` in one ``ldapmodify -a`` over LDAPS."""
        self._ldap_tool(ldif, "-a")

    def modify_ldif(self, ldif: str) -> None:
        """Apply ``changetype:`` records (modify, modrdn, delete) with ``ldapmodify``."""
        self._ldap_tool(ldif)

    def ldbsearch(self, flt: str, *attributes: str, base: str = BASE) -> list[dict[str, list[str]]]:
        """Entries as Samba's own ``ldbsearch`` prints them from the database (objectGUID as
        text, as Windows tools show it): [{attribute: [values]}], ``dn`` included."""
        proc = subprocess.run(["ldbsearch", "-H", str(self.sam_ldb), "-b", base, flt,
                               *attributes], capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            raise RuntimeError(f"ldbsearch failed ({proc.returncode}): {proc.stderr.strip()}")
        entries, entry = [], None
        # ldbsearch folds long values onto continuation lines that start with one space
        for line in proc.stdout.replace("\n ", "").splitlines():
            if line.startswith("# record"):
                entry = {}
                entries.append(entry)
            elif entry is not None and re.match(r"^[A-Za-z][\w-]*:", line):
                name, _, value = line.partition(":")
                if value.startswith(":"):
                    value = base64.b64decode(value[1:].strip()).decode("utf-8", "replace")
                entry.setdefault(name, []).append(value.strip())
            elif line.startswith("#") or not line.strip():
                entry = None if line.startswith("# Referral") else entry
        return entries

    def grant_deleted_objects_read(self, account: str) -> None:
        """Let ``account`` (a sAMAccountName) list the Deleted Objects container: the
        List Contents + Read Property grant of Microsoft's "let non-administrators view the
        Deleted Objects container" (``dsacls ... /G account:LCRP``). Written to the database
        with ``ldbmodify`` because the container is itself a deleted object."""
        (entry,) = self.ldbsearch(f"(sAMAccountName={account})", "objectSid")
        sid = entry["objectSid"][0]
        sddl = self._ldb_show_deleted(DELETED_OBJECTS, "nTSecurityDescriptor")
        dacl_end = sddl.find("S:", sddl.find("D:"))
        ace = f"(A;;RPLC;;;{sid})"
        sddl = sddl + ace if dacl_end < 0 else sddl[:dacl_end] + ace + sddl[dacl_end:]
        ldif = (f"dn: {DELETED_OBJECTS}\nchangetype: modify\nreplace: nTSecurityDescriptor\n"
                f"nTSecurityDescriptor: {sddl}\n")
        path = self.dir / "grant.ldif"
        path.write_text(ldif)
        proc = subprocess.run(["ldbmodify", "-H", str(self.sam_ldb), "--show-deleted", str(path)],
                              capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            raise RuntimeError(f"ldbmodify failed ({proc.returncode}): {proc.stderr.strip()}")

    def _ldb_show_deleted(self, dn: str, attribute: str) -> str:
        proc = subprocess.run(["ldbsearch", "-H", str(self.sam_ldb), "--show-deleted", "-s",
                               "base", "-b", dn, "(objectClass=*)", attribute],
                              capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            raise RuntimeError(f"ldbsearch failed ({proc.returncode}): {proc.stderr.strip()}")
        (value,) = re.findall(rf"^{attribute}: (.*)$", proc.stdout.replace("\n ", ""), re.M)
        return value

    def admin_connection(self):
        """An ldap3 Connection bound as Administrator over LDAPS, this CA verified."""
        import ldap3

        from connectors.ldap.tls import VerifyingTls, verifying_context

        tls = VerifyingTls(verifying_context(self.ca_file))
        server = ldap3.Server(self.address, port=636, use_ssl=True, tls=tls,
                              get_info=ldap3.NONE, connect_timeout=10)
        return ldap3.Connection(server, ADMIN, ADMIN_PASSWORD, auto_bind=True,
                                raise_exceptions=True, receive_timeout=30, auto_range=False,
                                return_empty_attributes=False)

    def highest_usn(self) -> int:
        conn = self.admin_connection()
        try:
            conn.search("", "(objectClass=*)", "BASE", attributes=["highestCommittedUSN"])
            return int(conn.response[0]["attributes"]["highestCommittedUSN"][0])
        finally:
            conn.unbind()


def service_accounts_ldif() -> str:
    """The two service accounts (ordinary users with passwords that never expire)."""
    return "".join(
        ldif_entry(f"CN={name},CN=Users,{BASE}", {
            "objectClass": "user", "sAMAccountName": name,
            "userPrincipalName": f"{name}@{UPN_SUFFIX}", "unicodePwd": unicode_pwd(password),
            "userAccountControl": "66048"})              # NORMAL_ACCOUNT | DONT_EXPIRE_PASSWD
        for name, password in ((SVC, SVC_PASSWORD), (SVC_DELETED, SVC_DELETED_PASSWORD)))


def session_dc(workdir: Path):
    """The generator behind the session fixture: provision, start, add the service accounts
    and the Deleted Objects grant, yield, stop. Skips (or fails, when
    ``SCIM_AGENT_REQUIRE_SAMBA`` is set, as in CI) only when Samba cannot run here."""
    import pytest

    reason = unavailable_reason()
    if reason:
        if os.environ.get("SCIM_AGENT_REQUIRE_SAMBA"):
            pytest.fail(f"SCIM_AGENT_REQUIRE_SAMBA is set but {reason}")
        pytest.skip(reason)
    dc = SambaDC(workdir)
    dc.start()
    try:
        dc.add_ldif(service_accounts_ldif())
        dc.grant_deleted_objects_read(SVC_DELETED)
        yield dc
    finally:
        dc.stop()
