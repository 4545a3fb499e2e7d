"""State path problems told apart, and read-only commands that never ask for write access.

The commands run as a user the snapshot's files do not belong to (root without the
capabilities that let it ignore file permissions, against files given to nobody: the same
kernel checks as the service user meeting files root left behind, or an administrator who may
only read the service's). Each problem is one sentence naming the path, the user, the owner
and the mode; the readers (plan, status, history) serve a snapshot they may read but not
write, and leave its bytes untouched.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from agent.cli.main import main
from agent.store.state import MIGRATIONS, SCHEMA_VERSION
from tests.conftest import Workspace, user

ROOT = Path(__file__).resolve().parent.parent
NOBODY = 65534

as_root_only = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                                  reason="dropping the permission-override capabilities "
                                         "needs root and setpriv (util-linux)")
UNPRIVILEGED = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner,-chown",
                "--"]


@pytest.fixture
def synced_ws(split_ws):
    ws = split_ws
    ws.write_directory([user("1", "ann@example.org"), user("2", "bob@example.org")], [])
    assert main(["--config", str(ws.config), "sync"]) == 0
    return ws


def give_away(path: Path, mode: int) -> None:
    """``path`` now belongs to nobody, with ``mode``."""
    os.chown(path, NOBODY, NOBODY)
    path.chmod(mode)


def as_other(ws: Workspace, *args: str) -> subprocess.CompletedProcess:
    """The CLI run as a user the files given away do not belong to."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([*UNPRIVILEGED, sys.executable, "-m", "agent", "--config",
                           str(ws.config), *args],
                          env=env, capture_output=True, text=True, timeout=120)


def fingerprint(db: Path) -> tuple:
    """The snapshot's bytes, and which SQLite side files lie next to it."""
    sides = tuple(sorted(p.name for p in db.parent.iterdir() if p.name.startswith(db.name)))
    return hashlib.sha256(db.read_bytes()).hexdigest(), sides


def one_sentence(text: str, *needles: str) -> None:
    assert "Traceback" not in text and "unexpected" not in text, text
    for needle in needles:
        assert needle in text, text


@as_root_only
def test_readers_serve_a_snapshot_they_may_read_but_not_write(synced_ws, fake_split):
    ws = synced_ws
    give_away(ws.state, 0o644)             # another user's file in their 0755 folder
    give_away(ws.state.parent, 0o755)
    before = fingerprint(ws.state)
    fake_split.reset_log()

    status = as_other(ws, "status")
    assert status.returncode == 0 and "Snapshot:" in status.stdout, status.stderr
    plan = as_other(ws, "plan", "--detailed-exitcode")
    assert plan.returncode == 0, plan.stdout + plan.stderr
    history = as_other(ws, "history", "ann@example.org")
    assert history.returncode == 0 and "create" in history.stdout, history.stderr
    assert fingerprint(ws.state) == before             # not a byte written, no side file left

    sync = as_other(ws, "sync")
    assert sync.returncode == 1
    one_sentence(sync.stderr, f"{ws.state}: the snapshot cannot be written by this user "
                              "(root)", "owned by nobody, mode 0644",
                 "plan, status and history only read it")
    check = as_other(ws, "check")
    assert check.returncode == 1
    one_sentence(check.stdout, "FAIL", "cannot be written by this user (root)")
    assert fake_split.writes() == []
    assert fingerprint(ws.state) == before


@as_root_only
def test_a_writable_file_in_a_folder_the_user_cannot_write_is_named(synced_ws):
    ws = synced_ws
    give_away(ws.state, 0o666)
    give_away(ws.state.parent, 0o755)
    sync = as_other(ws, "sync")
    assert sync.returncode == 1
    one_sentence(sync.stderr, "cannot be written by this user (root)",
                 f"{ws.state.parent} is owned by nobody, mode 0755",
                 f"its folder {ws.state.parent}, where SQLite keeps its journal")
    assert as_other(ws, "plan").returncode == 0           # reading needs no -shm of its own


@as_root_only
@pytest.mark.parametrize("command", ["status", "plan", "sync", "history ann@example.org"])
def test_a_snapshot_left_by_root_is_named_with_its_owner(synced_ws, command):
    ws = synced_ws
    give_away(ws.state, 0o600)
    give_away(ws.state.parent, 0o755)
    result = as_other(ws, *command.split())
    assert result.returncode == 1
    one_sentence(result.stderr, f"{ws.state}: this user (root) cannot read the snapshot "
                                "(owned by nobody, mode 0600)", "chown",
                 "a command run as root next to the service")


@as_root_only
@pytest.mark.parametrize("command", ["status", "plan", "sync"])
def test_a_state_folder_the_user_cannot_enter_is_named(synced_ws, command):
    ws = synced_ws
    give_away(ws.state.parent, 0o700)
    result = as_other(ws, command)
    assert result.returncode == 1
    one_sentence(result.stderr, f"this user (root) cannot enter {ws.state.parent} "
                                "(owned by nobody, mode 0700)")


def _point_state_at(ws: Workspace, path: Path) -> None:
    ws.config.write_text(ws.config.read_text().replace('path = "state/agent.db"',
                                                       f'path = "{path}"'))


@pytest.mark.parametrize("command", ["status", "plan", "sync", "check"])
def test_a_parent_that_is_a_file_is_named(split_ws, capsys, tmp_path, command):
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where a folder should be")
    _point_state_at(split_ws, blocked / "sub" / "agent.db")
    code = main(["--config", str(split_ws.config), command])
    out, err = capsys.readouterr()
    assert code == 1
    one_sentence(out + err, f"{blocked} is a file, not a folder")


@pytest.mark.parametrize("command", ["status", "plan", "sync", "check"])
def test_a_path_that_is_a_folder_is_named(split_ws, capsys, tmp_path, command):
    folder = tmp_path / "a-folder"
    folder.mkdir()
    _point_state_at(split_ws, folder)
    code = main(["--config", str(split_ws.config), command])
    out, err = capsys.readouterr()
    assert code == 1
    one_sentence(out + err, f"{folder}: is a folder, not a snapshot file")


def test_readers_upgrade_an_older_snapshot_in_memory_and_leave_the_file_alone(split_ws,
                                                                                capsys):
    old = SCHEMA_VERSION - 1
    split_ws.state.parent.mkdir(parents=True)
    import sqlite_utils
    db = sqlite_utils.Database(sqlite3.connect(split_ws.state))
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
    for version in range(1, old + 1):
        MIGRATIONS[version](db)
    db["meta"].upsert({"key": "schema_version", "value": str(old)}, pk="key")
    db.conn.commit()
    db.close()
    before = fingerprint(split_ws.state)
    split_ws.write_directory([user("1", "ann@example.org")], [])

    for command in (["status"], ["plan"], ["history", "ann@example.org"]):
        code = main(["--config", str(split_ws.config), *command])
        out, err = capsys.readouterr()
        assert code == 0, err
        one_sentence(err)
    assert fingerprint(split_ws.state) == before
    assert main(["--config", str(split_ws.config), "sync"]) == 0       # the writer upgrades it
    with sqlite3.connect(split_ws.state) as conn:
        stored = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    assert int(stored[0]) == SCHEMA_VERSION


def _readable_only(ws: Workspace) -> None:
    give_away(ws.state, 0o644)
    give_away(ws.state.parent, 0o755)


@as_root_only
def test_a_reader_who_may_not_write_waits_for_a_writer_instead_of_reading_torn_pages(
        synced_ws):
    from agent.store.locks import lock_snapshot
    ws = synced_ws
    _readable_only(ws)
    with lock_snapshot(ws.state):                   # a sync or a daemon cycle is writing
        for command in ("status", "plan", "history ann@example.org"):
            result = as_other(ws, *command.split())
            assert result.returncode == 1, result.stdout
            one_sentence(result.stderr, "is writing the snapshot right now",
                         "try again when the cycle is over")
            assert "damaged" not in result.stderr and "usable" not in result.stderr
    assert as_other(ws, "status").returncode == 0   # the cycle is over


@as_root_only
def test_a_reader_never_shows_old_data_past_a_journal_it_cannot_open(synced_ws):
    ws = synced_ws
    _readable_only(ws)
    wal = ws.state.with_name(ws.state.name + "-wal")
    wal.write_bytes(b"\x37\x7f\x06\x82" + b"\0" * 28)   # a killed sync's unfolded changes
    give_away(wal, 0o600)
    result = as_other(ws, "status")
    assert result.returncode == 1
    one_sentence(result.stderr, "agent.db-wal (owned by nobody, mode 0600) is in use or holds "
                                "changes not yet folded into the file",
                 "reading the file alone would show old data")


@as_root_only
def test_a_reader_who_cannot_read_the_lock_says_so(synced_ws):
    ws = synced_ws
    _readable_only(ws)
    give_away(ws.state.with_name(ws.state.name + ".lock"), 0o600)   # made by an older version
    result = as_other(ws, "plan")
    assert result.returncode == 1
    one_sentence(result.stderr, "may read the snapshot but not its lock",
                 "owned by nobody, mode 0600")


@as_root_only
def test_a_group_reader_leaves_no_file_behind(synced_ws):
    ws = synced_ws
    give_away(ws.state, 0o640)
    os.chown(ws.state, NOBODY, 0)                    # the reader (root, no overrides) is in
    give_away(ws.state.parent, 0o2770)               # the group; the folder group-writable
    os.chown(ws.state.parent, NOBODY, 0)
    before = fingerprint(ws.state)
    assert as_other(ws, "status").returncode == 0
    assert fingerprint(ws.state) == before           # no -shm or -wal of the reader's


def _deny_root_writes_by_acl(path: Path) -> None:
    """user:root:r-- on a file whose mode lets everyone write (setfacl, without setfacl)."""
    import struct
    undefined = 0xFFFFFFFF
    entries = [(0x01, 6, undefined), (0x02, 4, 0), (0x04, 6, undefined), (0x10, 6, undefined),
               (0x20, 6, undefined)]          # USER_OBJ, USER root, GROUP_OBJ, MASK, OTHER
    os.setxattr(path, "system.posix_acl_access", struct.pack("<I", 2) + b"".join(
        struct.pack("<HHI", tag, perm, uid) for tag, perm, uid in entries))


@as_root_only
def test_an_acl_that_denies_writing_is_named_as_an_acl(synced_ws):
    ws = synced_ws
    give_away(ws.state, 0o666)
    give_away(ws.state.parent, 0o777)
    try:
        _deny_root_writes_by_acl(ws.state)
    except OSError as exc:
        pytest.skip(f"this file system keeps no ACLs ({exc.strerror})")
    result = as_other(ws, "sync")
    assert result.returncode == 1
    one_sentence(result.stderr, "an access control list on", "denies it (getfacl")
    assert "immutable" not in result.stderr


@as_root_only
@pytest.mark.parametrize("command", ["status", "plan", "check"])
def test_a_dynamic_user_state_folder_behind_its_private_link_is_named(tmp_path, split_ws,
                                                                      command):
    # systemd's DynamicUser=yes: /var/lib/NAME -> private/NAME, private/ 0700 root's
    private = tmp_path / "lib" / "private"
    (private / "scim-agent").mkdir(parents=True)
    (tmp_path / "lib" / "scim-agent").symlink_to("private/scim-agent")
    give_away(private, 0o700)
    _point_state_at(split_ws, tmp_path / "lib" / "scim-agent" / "agent.db")
    result = as_other(split_ws, command)
    assert result.returncode == 1
    one_sentence(result.stdout + result.stderr, f"cannot enter {private} (owned by nobody, "
                                                "mode 0700)")


@pytest.mark.parametrize("command", ["status", "plan", "sync"])
def test_a_link_to_a_missing_folder_is_named(tmp_path, split_ws, capsys, command):
    (tmp_path / "mnt").symlink_to(tmp_path / "not-mounted")
    _point_state_at(split_ws, tmp_path / "mnt" / "agent.db")
    code = main(["--config", str(split_ws.config), command])
    out, err = capsys.readouterr()
    assert code == 1
    one_sentence(out + err, f"{tmp_path / 'mnt'} is a symlink to {tmp_path / 'not-mounted'}, "
                            "which does not exist")


def _mount_read_only(folder: Path) -> bool:
    """Bind ``folder`` over itself read-only (root with CAP_SYS_ADMIN); False if not allowed."""
    bind = subprocess.run(["mount", "--bind", str(folder), str(folder)], capture_output=True)
    if bind.returncode != 0:
        return False
    ro = subprocess.run(["mount", "-o", "remount,bind,ro", str(folder)], capture_output=True)
    if ro.returncode != 0:
        subprocess.run(["umount", str(folder)], capture_output=True)
        return False
    return True


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("mount"),
                    reason="a bind mount needs root")
def test_a_state_folder_on_a_read_only_mount_is_named_and_readers_still_serve(synced_ws,
                                                                              capsys):
    """``ProtectSystem=strict`` without the state folder in ``ReadWritePaths=`` (or a volume
    mounted ``ro``): even root may not write. sync says the mount is read-only, in one
    sentence; the readers serve the snapshot and leave it as it was."""
    ws = synced_ws
    folder = ws.state.parent
    before = fingerprint(ws.state)
    if not _mount_read_only(folder):
        pytest.skip("this machine does not allow bind mounts")
    try:
        for command in (["status"], ["plan"], ["history", "ann@example.org"]):
            assert main(["--config", str(ws.config), *command]) == 0, capsys.readouterr().err
        capsys.readouterr()
        assert main(["--config", str(ws.config), "sync"]) == 1
        one_sentence(capsys.readouterr().err, f"{ws.state} is on a file system mounted read-only")
        assert fingerprint(ws.state) == before
    finally:
        subprocess.run(["umount", str(folder)], check=True)
