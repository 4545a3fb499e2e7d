"""django-scim2 (15five, pinned in pyproject), stock, in the smallest Django project it needs.

django-scim2 is a library, not a server: its README asks the project for a User model with
``AbstractSCIMUserMixin``, a Group model with ``AbstractSCIMGroupMixin``, a middleware that
signs the request's user in, and ``SCIM_SERVICE_PROVIDER`` settings. That is all this package
provides (``scimapp``, ``settings``, ``urls``); every SCIM answer is django-scim2's own
adapters, views and filters, unchanged.

:class:`DjangoScim2Server` runs it in a child process (Django's settings are per process) on
127.0.0.1 with a port the OS picks, against an SQLite file migrated once per test session and
copied per server, and stops it by its pid. What stock django-scim2 refuses, and why that is
the server's limit: docs/targets/django-scim2.md.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from tests.servers.process import stop

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
START_TIMEOUT = 60.0             # seconds for the child to migrate or copy, and listen
_template_lock = threading.Lock()
_template: Path | None = None


def _python_env(db: Path, token: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    env.update(DJANGO_SETTINGS_MODULE="tests.servers.django_scim2.settings",
               SCIM_TEST_DB=str(db), SCIM_TEST_TOKEN=token,
               PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""))
    return env


def migrated_template() -> Path:
    """An SQLite file with django-scim2's schema, made once per test session."""
    global _template
    with _template_lock:
        if _template is None or not _template.exists():
            folder = Path(tempfile.mkdtemp(prefix="django-scim2-"))
            db = folder / "template.sqlite3"
            subprocess.run([sys.executable, "-m", "django", "migrate", "--run-syncdb",
                            "--verbosity", "0"], env=_python_env(db, "unused"), check=True,
                           timeout=START_TIMEOUT, cwd=ROOT)
            _template = db
        return _template


class DjangoScim2Server:
    """A running django-scim2 on loopback: ``base_url``, ``token``; a context manager."""

    def __init__(self, token: str = "django-scim2-token"):
        self.token = token
        self.folder = Path(tempfile.mkdtemp(prefix="django-scim2-run-"))
        self.db = self.folder / "db.sqlite3"
        self.process: subprocess.Popen | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/scim/v2"

    def __enter__(self) -> "DjangoScim2Server":
        shutil.copy(migrated_template(), self.db)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.servers.django_scim2.serve"],
            env=_python_env(self.db, self.token), cwd=ROOT, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, stdin=subprocess.PIPE, text=True)
        line: list[str] = []
        reader = threading.Thread(target=lambda: line.append(self.process.stdout.readline()),
                                  daemon=True)
        reader.start()
        reader.join(START_TIMEOUT)
        if not line or not line[0].startswith("listening "):
            self.__exit__()
            raise RuntimeError("django-scim2 did not start")
        self.port = int(line[0].split()[1])
        return self

    def __exit__(self, *exc) -> None:
        stop(self.process)                    # our own child, by its pid
        self.process = None
        shutil.rmtree(self.folder, ignore_errors=True)
