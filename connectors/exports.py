"""Reading one export file whole, and refusing it when it may not be whole.

An export read as complete when it is not would make the missing people look like leavers,
so every check here errs towards refusing, with one sentence naming the file (and the line)
and what to do. What can be told from the bytes alone:

- a file that is not a regular file (a folder, a pipe that would block the read) is refused;
- a CSV file that does not end with a newline was cut in the middle of its last line (JSON
  needs no such rule: cut anywhere, it does not parse);
- NUL bytes are what a file cut short by a crash is often padded with;
- bytes that are not UTF-8 name the line they are on.

What cannot: a CSV export cut exactly at a line boundary looks like a smaller, complete one.
For exports written by scripts, two optional proofs close that gap: a ``# rows: N`` trailer
as the last line of a CSV file (:func:`split_trailer`), and a ``<file>.sha256`` side file as
``sha256sum`` writes it (:func:`verify_checksum`), checked against the very bytes parsed.
"""

from __future__ import annotations

import hashlib
import re
import stat
from pathlib import Path

from .base import SourceError

TRAILER = re.compile(r"#\s*rows:\s*(\d+)\s*")
_DIGEST = re.compile(r"[0-9a-fA-F]{64}")


def read_bytes(path: Path) -> bytes:
    """The file's bytes, or a SourceError naming what is wrong with it."""
    try:
        mode = path.stat().st_mode
        if stat.S_ISDIR(mode):
            raise SourceError(f"{path}: is a folder, not a file")
        if not stat.S_ISREG(mode):
            raise SourceError(f"{path}: is not a regular file (a pipe or a device?); export "
                              "to a file")
        return path.read_bytes()
    except FileNotFoundError:
        raise SourceError(f"{path}: source file not found") from None
    except PermissionError:
        raise SourceError(f"{path}: cannot read the source file: permission denied") from None
    except OSError as exc:
        raise SourceError(f"{path}: cannot read the source file: {exc.strerror}") from None


def check_whole(path: Path, data: bytes, *, newline: bool) -> None:
    """Refuse an empty file, NUL bytes, and (``newline``: line-oriented formats) a file that
    ends in the middle of a line. JSON needs no final newline: cut anywhere, it does not
    parse."""
    if not data:
        raise SourceError(f"{path}: the file is empty")
    if b"\0" in data:
        line = data[:data.index(b"\0")].count(b"\n") + 1
        raise SourceError(f"{path}: line {line}: NUL bytes (a file cut short by a crash is "
                          "often padded with them); export it again")
    if newline and not data.endswith(b"\n"):
        line = data.count(b"\n") + 1
        raise SourceError(f"{path}: line {line} does not end with a newline: the export looks "
                          "cut off (its last value would be read as it stands); export it "
                          "again, ending the file with a newline")


def decode(path: Path, data: bytes) -> str:
    """UTF-8 text (a byte-order mark is accepted); a bad byte names its line."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise SourceError(f"{path}: line {line}: not UTF-8 text (byte 0x{data[exc.start]:02x}); "
                          "export the file as UTF-8") from None


def split_trailer(path: Path, text: str, required: bool) -> tuple[str, int | None]:
    """``text`` without its ``# rows: N`` trailer line, and N (None when there is none).
    ``text`` ends with a newline (:func:`check_whole`)."""
    body, _, last = text[:-1].rpartition("\n")
    match = TRAILER.fullmatch(last.rstrip("\r"))
    if match:
        return (body + "\n" if body else ""), int(match.group(1))
    if required:
        raise SourceError(f"{path}: the last line is not a '# rows: N' trailer "
                          "([source] require_trailer): the export is cut off, or was written "
                          "without one")
    return text, None


def check_row_count(path: Path, rows: int, announced: int | None) -> None:
    if announced is not None and rows != announced:
        raise SourceError(f"{path}: {rows} row(s) read but the trailer announces {announced}: "
                          "the export is incomplete; export it again")


def checksum_file(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def verify_checksum(path: Path, data: bytes) -> None:
    """``data`` (the bytes about to be parsed) must match ``<path>.sha256``: a hex SHA-256
    digest, optionally followed by a file name, as ``sha256sum FILE > FILE.sha256`` writes."""
    side = checksum_file(path)
    try:
        text = read_bytes(side).decode("ascii", errors="replace")
    except SourceError:
        if not side.exists():
            raise SourceError(f"{path}: no checksum file {side.name} beside it "
                              "([source] require_checksum); write it after the export, e.g. "
                              f"sha256sum {path.name} > {side.name}") from None
        raise
    words = text.split()
    if not words or not _DIGEST.fullmatch(words[0]):
        raise SourceError(f"{side}: expected a SHA-256 digest (64 hex digits) as sha256sum "
                          "writes it")
    if hashlib.sha256(data).hexdigest() != words[0].lower():
        raise SourceError(f"{path}: does not match its checksum in {side.name}: the export is "
                          "incomplete, or was written again after the checksum (write the "
                          "checksum last); nothing was read")
