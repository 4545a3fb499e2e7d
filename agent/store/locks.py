"""The two locks beside a snapshot, and the one way both are taken.

``<db>.lock`` (the snapshot lock) is held by whoever writes the snapshot: a ``sync``, or the
daemon during a cycle. ``<db>.daemon.lock`` is held by ``scim-agent run`` for its whole life,
so a second daemon exits at once while a manual ``sync`` between cycles still works.

Both are ``flock(2)`` locks on a private file that holds the holder's pid. The kernel drops a
flock when its process dies, so a crash never leaves a stale lock behind; the pid is only
there to name the holder in a message.

A lock belongs to the snapshot file, not to how its path is spelled: the path is resolved
(symlinks, ``..``, a relative path) before the lock file is named, so ``state/agent.db``, an
absolute spelling and a symlink to it all take the same lock. A snapshot with a second hard
link is refused: no path operation can tell the two names apart, and SQLite names its WAL
after the path, so two names of one database would corrupt it.
"""

from __future__ import annotations

import fcntl
import os
import stat
from pathlib import Path

from .access import described, me
from .errors import OWNERSHIP_HINT, StateBusy, StateError, a_folder


class LockHeld(Exception):
    """Another process holds the lock; ``pid`` is its pid when it wrote one."""

    def __init__(self, path: Path, pid: int | None):
        super().__init__(f"{path}: locked by {f'pid {pid}' if pid else 'another process'}")
        self.path = path
        self.pid = pid


class FileLock:
    """An exclusive, non-blocking flock on ``path`` holding our pid. Release it (or use
    ``with``) when done; the kernel releases it anyway if the process dies."""

    def __init__(self, path: Path, fd: int):
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def take(cls, path: Path) -> "FileLock":
        """Take the lock now or raise :class:`LockHeld`; OSError if the file cannot be opened."""
        # O_NOFOLLOW: a symlink planted in place of the lock must not aim our truncate elsewhere.
        # Readable by others (it holds a pid): a reader who may not write the snapshot holds it
        # shared while it reads (reader_lock).
        fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            raise LockHeld(path, pid) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return cls(path, fd)

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "FileLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def holder(path: Path) -> int | None:
    """Who holds the lock at ``path``: its pid (0 when it wrote none), or None when free."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_pid(fd) or 0
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _read_pid(fd: int) -> int | None:
    text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    return int(text) if text.isdigit() else None


# ---------------------------------------------------------------------------------------------
# The snapshot's two locks


def snapshot_file(db: Path) -> Path:
    """The snapshot file itself, however ``db`` spells it: symlinks (of the file or of a folder
    above it), ``..`` and a relative path resolved. A file with a second hard link is refused."""
    real = Path(os.path.realpath(db))
    try:
        info = real.stat()
    except OSError:
        return real                      # not created yet (or unreadable: opening will say)
    if stat.S_ISDIR(info.st_mode):
        raise a_folder(db)
    links = info.st_nlink
    if links > 1:
        raise StateError(f"{db}: the snapshot has {links} hard links; keep one name for it "
                         "(SQLite names its journal after the path, so two names of one "
                         "snapshot would corrupt it)")
    return real


def snapshot_lock_path(db: Path) -> Path:
    real = snapshot_file(db)
    return real.with_name(real.name + ".lock")


def daemon_lock_path(db: Path) -> Path:
    real = snapshot_file(db)
    return real.with_name(real.name + ".daemon.lock")


def lock_snapshot(db: Path) -> FileLock:
    """The snapshot lock, for a writer. :class:`StateBusy` while another agent writes."""
    path = snapshot_lock_path(db)
    try:
        return FileLock.take(path)
    except PermissionError:
        raise StateError(f"{path}: permission denied: {OWNERSHIP_HINT}") from None
    except LockHeld as held:
        if _held_shared(path):         # readers write no pid: the one in the file is stale
            raise StateBusy(f"{db}: someone is reading the snapshot (a plan, status or "
                            "history run by a user who may only read it); try again when it "
                            "is done") from None
        raise StateBusy(f"{db}: another scim-agent{f' (pid {held.pid})' if held.pid else ''} "
                        "is using this snapshot (the daemon, or a sync still running); try "
                        "again when it is done") from None
    except OSError as exc:
        raise StateError(f"{path}: cannot take the snapshot lock: {exc.strerror}") from None


def _held_shared(path: Path) -> bool:
    """Whether the lock at ``path`` is held shared only (a reader), not by a writer."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    else:
        return True
    finally:
        os.close(fd)               # closing drops the shared lock just taken


def lock_daemon(db: Path) -> FileLock:
    """The daemon lock, for ``scim-agent run``: one daemon per snapshot."""
    try:
        db.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise StateError(f"{db.parent}: cannot create the state folder: {exc.strerror}") from None
    path = daemon_lock_path(db)
    try:
        return FileLock.take(path)
    except LockHeld as held:
        raise StateError(f"{db}: another scim-agent daemon is already running for this "
                         f"snapshot (pid {held.pid or 'unknown'}); stop it first") from None
    except OSError as exc:
        raise StateError(f"{path}: cannot create the daemon lock: {exc.strerror}") from None


def lock_holder(db: Path) -> int | None:
    """The pid of the agent holding the snapshot lock (0 if unknown), or None when free."""
    try:
        return holder(snapshot_lock_path(Path(db)))
    except StateError:
        return None


class SharedLock(FileLock):
    """The snapshot lock held shared by a reader: no writer can take it meanwhile."""


def reader_lock(db: Path) -> SharedLock | None:
    """For a reader who reads the snapshot file alone (it may not make its journal): hold the
    snapshot lock shared, so that no sync or daemon cycle writes while it reads (they find it
    busy and try again later). None when no agent ever wrote this snapshot (no lock file)."""
    path = snapshot_lock_path(db)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateError(f"{db}: this user ({me()}) may read the snapshot but not its lock "
                         f"{path} ({described(path)}: {exc.strerror}), so it cannot make sure "
                         "no agent writes while it reads; run the command as the service "
                         "user, or make the lock readable (chmod 644; this version creates it "
                         "so)") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = _read_pid(fd)
        os.close(fd)
        raise StateBusy(f"{db}: an agent{f' (pid {pid})' if pid else ''} is writing the "
                        f"snapshot right now, and this user ({me()}) may not read its journal "
                        "while it does; try again when the cycle is over, or run the command "
                        "as the service user") from None
    return SharedLock(path, fd)


def unfolded(db: Path) -> None:
    """Refuse to read the file alone while a journal beside it holds what it would miss: the
    changes of a sync that has not folded them into the file yet (one still running, or one
    that was killed), or the index of a connection still open."""
    for suffix in ("-wal", "-shm"):
        side = db.with_name(db.name + suffix)
        try:
            size = side.stat().st_size
        except FileNotFoundError:
            continue
        except OSError:
            size = 1
        if suffix == "-wal" and size == 0:
            continue
        raise StateError(f"{db}: the snapshot's journal {side.name} ({described(side)}) is "
                         f"in use or holds changes not yet folded into the file, and this user "
                         f"({me()}) may not open it; reading the file alone would show old "
                         "data. Run the command as the service user, or run sync once as it "
                         "(that folds the journal in)")
