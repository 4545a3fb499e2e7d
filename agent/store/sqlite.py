"""The snapshot's SQLite connection: what goes wrong underneath is a StateError with a sentence.

A full disk, a read-only or immutable file, an I/O error, a damaged file or another process
holding a write lock are not bugs: they are the machine telling the operator something.
:func:`connect` opens a connection whose statements raise :class:`StoreFailure` (a
:class:`StateError`) for them, naming the file and what to do, wherever in the store the
statement was made; :func:`describe` does the same for an error met elsewhere (a cursor
read). Anything else (a programming error) stays a ``sqlite3`` error.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from urllib.parse import quote

from .errors import OWNERSHIP_HINT, StateError

# primary result codes (https://www.sqlite.org/rescode.html)
_PERM, _BUSY, _LOCKED, _READONLY, _IOERR, _CORRUPT, _FULL, _CANTOPEN, _NOTADB = (
    3, 5, 6, 8, 10, 11, 13, 14, 26)

REBUILD = "move it aside and run sync to rebuild it from the target"
SAFE = ("what was recorded before is safe, and an operation whose answer could not be "
        "recorded is looked up on the next run, not sent twice")


class StoreFailure(StateError):
    """The snapshot file could not be read or written; the message says why and what to do."""


def describe(path: Path, exc: sqlite3.Error) -> StoreFailure | None:
    """The StateError an environmental SQLite failure means, or None for any other error."""
    code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
    text = str(exc)
    if code == _FULL or "disk is full" in text:
        return StoreFailure(f"{path}: the snapshot cannot be written: the disk is full; free "
                            f"some space and run again ({SAFE})")
    if code == _READONLY or "readonly" in text:
        return StoreFailure(f"{path}: the snapshot cannot be written: the file or its folder "
                            "is read-only (permissions, a read-only mount, or the immutable "
                            "attribute: lsattr); make both writable by the user the agent runs "
                            "as")
    if code == _IOERR or "disk I/O error" in text:
        return StoreFailure(f"{path}: the snapshot cannot be written: a disk I/O error "
                            f"({text}); check the disk and run again ({SAFE})")
    if code in (_CORRUPT, _NOTADB) or "malformed" in text or "not a database" in text:
        return StoreFailure(f"{path}: not a usable snapshot database ({text}); {REBUILD}")
    if code in (_BUSY, _LOCKED) or "database is locked" in text:
        return StoreFailure(f"{path}: the snapshot is locked by another process (a copy or a "
                            "backup tool?); try again when it is done")
    if code in (_CANTOPEN, _PERM) or "unable to open" in text:
        return StoreFailure(f"{path}: the snapshot cannot be opened ({text}): {OWNERSHIP_HINT}")
    return None


class _Connection(sqlite3.Connection):
    """sqlite3's connection, with environmental failures raised as :class:`StoreFailure`."""

    def __init__(self, database, *args, **kwargs):
        super().__init__(database, *args, **kwargs)
        self.snapshot_path = Path(database)

    def _failed(self, exc: sqlite3.Error) -> BaseException:
        return describe(self.snapshot_path, exc) or exc

    def execute(self, *args, **kwargs):
        try:
            return super().execute(*args, **kwargs)
        except sqlite3.Error as exc:
            raise self._failed(exc) from exc

    def executemany(self, *args, **kwargs):
        try:
            return super().executemany(*args, **kwargs)
        except sqlite3.Error as exc:
            raise self._failed(exc) from exc

    def executescript(self, *args, **kwargs):
        try:
            return super().executescript(*args, **kwargs)
        except sqlite3.Error as exc:
            raise self._failed(exc) from exc

    def commit(self):
        try:
            return super().commit()
        except sqlite3.Error as exc:
            raise self._failed(exc) from exc


def connect(path: Path | str, *, readonly: bool = False,
            immutable: bool = False) -> sqlite3.Connection:
    """A connection to the snapshot at ``path`` for the store (any thread may use it; the
    store serialises its writes).

    ``readonly`` opens it so that nothing can be written (``mode=ro``; SQLite may still make
    the ``-shm`` index beside it, with the file's own owner and mode). ``immutable`` also
    reads without the index and the journal: only for a reader who may not make them, and
    only while nothing can write the file (see ``State.read``)."""
    if not readonly:
        return sqlite3.connect(path, timeout=10, check_same_thread=False, factory=_Connection)
    uri = f"file:{quote(str(Path(path).absolute()))}?mode=ro" + ("&immutable=1" if immutable else "")
    conn = sqlite3.connect(uri, uri=True, timeout=10, check_same_thread=False,
                           factory=_Connection)
    conn.snapshot_path = Path(path)
    return conn


class ReadOnlyDatabase:
    """What the store asks of a ``sqlite_utils.Database`` (``execute``, ``conn``, ``close``),
    for a connection that only reads (``State.read``): ``plan`` and ``status`` do not import
    sqlite_utils, nor the click, dateutil and pluggy it loads (a tenth of a plan's start).
    sqlite_utils stays the store's tool wherever the schema is made or rows are written."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def execute(self, sql: str, parameters=None) -> sqlite3.Cursor:
        if parameters is None:
            return self.conn.execute(sql)
        return self.conn.execute(sql, parameters)

    def atomic(self):
        """(A read-only connection writes nothing; as sqlite_utils would, should it try.)"""
        import sqlite_utils
        return sqlite_utils.Database(self.conn).atomic()

    def close(self) -> None:
        self.conn.close()


class BackgroundCheck:
    """``PRAGMA quick_check`` of the file at ``path``, on a connection of its own in a thread
    of its own. SQLite checks without holding Python's lock, so the check costs no time
    while the reader does something else (a plan reads its source meanwhile, on the other
    core). :meth:`result` waits for it: ``"ok"``, or what is wrong; an error met checking is
    raised there."""

    def __init__(self, path: Path, *, immutable: bool = False):
        self._path, self._immutable = path, immutable
        self._outcome: str | BaseException = "not checked"
        self._thread = threading.Thread(target=self._check, name="snapshot-check", daemon=True)
        self._thread.start()

    def _check(self) -> None:
        try:
            conn = connect(self._path, readonly=True, immutable=self._immutable)
            try:
                self._outcome = conn.execute("PRAGMA quick_check").fetchone()[0]
            finally:
                conn.close()
        except BaseException as exc:        # (raised in the thread that asks)
            self._outcome = exc

    def wait(self) -> None:
        """Until the check is over: the file stays open to it, and a reader lock must be
        held until then. A Ctrl-C while waiting still waits (the check is short), then
        goes on."""
        try:
            self._thread.join()
        except BaseException:
            self._thread.join()
            raise

    def result(self) -> str:
        self.wait()
        if isinstance(self._outcome, BaseException):
            raise self._outcome
        return self._outcome
