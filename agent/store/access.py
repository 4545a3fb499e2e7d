"""What stands between this user and the snapshot file, said before SQLite says something vaguer.

:func:`diagnose` is asked before the snapshot is opened. It tells apart the ways a state path
goes wrong on a real server: a folder on the way that is a file, a folder this user cannot
enter, a path that is itself a folder, a file this user cannot read, and (for a writer only) a
file or folder it cannot write. Each sentence names the path, the user asking, the owner and
mode of what refused, and what to do. Readers (``plan``, ``status``, ``history``, ``check``)
ask for read access only: a snapshot the administrator may read but not write serves them.
"""

from __future__ import annotations

import os
import pwd
import stat
from pathlib import Path

from .errors import StateError, a_folder

READERS = "plan, status and history only read it"


def _name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:                   # a DynamicUser= or a uid with no passwd entry
        return f"uid {uid}"


def me() -> str:
    return _name(os.geteuid())


def described(path: Path) -> str:
    """'owned by root, mode 0600': who may do what with ``path``."""
    try:
        st = path.stat()
    except OSError:
        return "its owner and mode cannot be read"
    return f"owned by {_name(st.st_uid)}, mode {stat.S_IMODE(st.st_mode):04o}"


def _has_acl(path: Path) -> bool:
    try:
        return "system.posix_acl_access" in os.listxattr(path)
    except OSError:
        return False


def _overrides_permissions() -> bool:
    """Does this process ignore file modes (root with CAP_DAC_OVERRIDE)?"""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) & (1 << 1))    # CAP_DAC_OVERRIDE
    except (OSError, ValueError):
        pass
    return os.geteuid() == 0


def _dangling(path: Path) -> bool:
    try:
        os.stat(path)
        return False
    except FileNotFoundError:
        return os.path.islink(path)
    except OSError:
        return False


def _nearest_existing(path: Path) -> Path:
    for folder in (path, *path.parents):
        if os.path.lexists(folder):
            return folder
    return Path("/")


def _fix(path: Path) -> str:
    """What to do about a file or folder this user may not use."""
    return (f"run the agent as its owner (the service user), or give it to the user the agent "
            f"runs as, e.g. chown <user> {path}; a command run as root next to the service "
            "leaves such files behind")


def why_not_writable(path: Path) -> str:
    """The likeliest reason this user may not write ``path``: a read-only mount, the mode
    and owner, or (when neither forbids it) the immutable or append-only attribute."""
    try:
        if os.statvfs(path).f_flag & os.ST_RDONLY:
            return f"{path} is on a file system mounted read-only"
        st = path.stat()
    except OSError as exc:
        return f"{path} cannot be examined ({exc.strerror})"
    uid = os.geteuid()
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid == uid:
        allowed = mode & stat.S_IWUSR
    elif st.st_gid == os.getegid() or st.st_gid in os.getgroups():
        allowed = mode & stat.S_IWGRP
    else:
        allowed = mode & stat.S_IWOTH
    allowed = allowed or _overrides_permissions()
    if allowed and _has_acl(path):
        return f"an access control list on {path} denies it (getfacl {path} shows it)"
    if allowed:
        return (f"{path} is marked immutable or append-only (lsattr shows i or a; chattr -i "
                f"{path} undoes it)")
    return f"{path} is {described(path)}; {_fix(path)}"


def diagnose(path: Path, *, write: bool) -> None:
    """Raise a :class:`StateError` naming the cause if this user cannot use ``path`` as its
    snapshot: read it (and, with ``write``, write it or create it). Silent when all is well;
    SQLite's own errors, translated by :mod:`.sqlite`, cover what is left (a full disk, a
    read-only mount met mid-write, damage)."""
    given = Path(path)
    for ancestor in reversed(given.parents):
        if _dangling(ancestor):
            raise StateError(f"{given}: {ancestor} is a symlink to {os.readlink(ancestor)}, "
                             "which does not exist (a volume not mounted?)")
    # Symlinks resolved (systemd's DynamicUser= state folder is one, into a 0700 private/):
    # a folder this user cannot enter is named, wherever on the way it is.
    path = Path(os.path.realpath(given))
    for ancestor in reversed((path, *path.parents)):
        if ancestor == path:
            break
        if os.path.lexists(ancestor) and not os.path.isdir(ancestor):
            raise StateError(f"{given}: {ancestor} is a file, not a folder, so the snapshot "
                             "cannot be kept under it; point [state] path at a file inside a "
                             "folder")
        if not os.access(ancestor, os.X_OK):
            if not os.path.lexists(ancestor) and ancestor.parent != ancestor \
                    and os.access(ancestor.parent, os.X_OK):
                break                          # not made yet, below a folder we may enter
            raise StateError(f"{given}: this user ({me()}) cannot enter {ancestor} "
                             f"({described(ancestor)}); {_fix(ancestor)}")
    folder = path.parent
    existing = _nearest_existing(folder)         # a folder: the walk above saw to that
    if path.is_dir():
        raise a_folder(given)
    if not path.exists():
        if write and not os.access(existing, os.W_OK):
            raise StateError(f"{given}: cannot be created: this user ({me()}) cannot write to "
                             f"{existing} ({described(existing)}); {_fix(existing)}")
        return
    if not os.access(path, os.R_OK):
        raise StateError(f"{given}: this user ({me()}) cannot read the snapshot "
                         f"({described(path)}); {_fix(path)}")
    if not write:
        return
    for what in (path, folder):
        if not os.access(what, os.W_OK):
            where = "it" if what == path else f"its folder {folder}, where SQLite keeps its journal"
            raise StateError(f"{given}: the snapshot cannot be written by this user ({me()}): "
                             f"{why_not_writable(what)}; {READERS}, sync and run need to "
                             f"write {where}")
    for suffix in ("-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        if side.exists() and not os.access(side, os.R_OK | os.W_OK):
            raise StateError(f"{side}: this user ({me()}) cannot write the snapshot's "
                             f"journal ({described(side)}); {_fix(side)}")
