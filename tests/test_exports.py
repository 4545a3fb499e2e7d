"""Complete reads only (connectors/exports.py): an export cut anywhere is refused.

Every cut is tried, byte by byte, on a small export in each format: the read either refuses
the file with a SourceError, or returns exactly what the whole file holds. The one class of
cuts a file alone cannot reveal (a CSV cut at a line boundary) is listed as such, and the
trailer and the checksum close it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from connectors.base import SourceError
from connectors.files import FileSource
from tests.test_files import people_document, write_people_csv


def read(path: Path, **settings):
    return FileSource(FileSource.Settings(path=path, **settings)).read()


def same(a, b) -> bool:
    return a.users == b.users and a.groups == b.groups and a.groups_read == b.groups_read


def add_trailer(path: Path) -> None:
    rows = path.read_bytes().count(b"\n") - 1          # no quoted newlines in these exports
    with path.open("ab") as handle:
        handle.write(f"# rows: {rows}\n".encode())


def add_checksum(path: Path) -> None:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    (path.parent / (path.name + ".sha256")).write_text(f"{digest}  {path.name}\n")


def cuts(path: Path):
    """Write every proper prefix of ``path`` in turn (restoring it afterwards)."""
    whole = path.read_bytes()
    try:
        for end in range(len(whole)):
            path.write_bytes(whole[:end])
            yield end, whole
    finally:
        path.write_bytes(whole)


# ------------------------------------------------------------------ JSON


def test_a_json_export_cut_anywhere_is_refused(tmp_path):
    path = tmp_path / "directory.json"
    path.write_text(json.dumps(people_document(), ensure_ascii=False, indent=1) + "\n",
                    encoding="utf-8")
    whole = read(path)
    accepted = []
    for end, data in cuts(path):
        try:
            got = read(path)
        except SourceError as exc:
            assert str(path) in str(exc) and "\n" not in str(exc)
            continue
        assert same(got, whole), f"cut at byte {end} read as a different directory"
        accepted.append(data[end:])
    assert accepted == [b"\n"]                # only the final newline may go


def test_a_json_export_with_a_checksum_refuses_any_change(tmp_path):
    path = tmp_path / "directory.json"
    path.write_text(json.dumps(people_document()), encoding="utf-8")
    add_checksum(path)
    read(path, require_checksum=True)
    for end, _ in cuts(path):
        with pytest.raises(SourceError, match="does not match its checksum|is empty"):
            read(path, require_checksum=True)


# ------------------------------------------------------------------ CSV


@pytest.mark.parametrize("name", ["users.csv", "groups.csv"])
def test_a_csv_export_cut_inside_a_line_is_refused_and_only_line_boundaries_go_unseen(
        tmp_path, name):
    folder = write_people_csv(tmp_path)
    whole = read(folder)
    unseen = []
    for end, data in cuts(folder / name):
        try:
            got = read(folder)
        except SourceError as exc:
            assert name in str(exc) and "\n" not in str(exc)
            continue
        if same(got, whole):
            continue
        assert data[end - 1:end] == b"\n", f"a cut at byte {end}, inside a line, was accepted"
        unseen.append(end)
    # These are the cuts no reader can see without help (docs/sources/file.md says so).
    assert unseen, "expected cuts at line boundaries to be undetectable without a trailer"


@pytest.mark.parametrize("name", ["users.csv", "groups.csv"])
def test_with_a_trailer_every_cut_of_a_csv_export_is_refused(tmp_path, name):
    folder = write_people_csv(tmp_path)
    for file in ("users.csv", "groups.csv"):
        add_trailer(folder / file)
    whole = read(folder, require_trailer=True)
    assert same(whole, read(folder))                   # a trailer is read, not taken for a row
    for end, _ in cuts(folder / name):
        with pytest.raises(SourceError) as info:
            read(folder, require_trailer=True)
        assert name in str(info.value)


@pytest.mark.parametrize("name", ["users.csv", "groups.csv"])
def test_with_a_checksum_every_cut_of_a_csv_export_is_refused(tmp_path, name):
    folder = write_people_csv(tmp_path)
    for file in ("users.csv", "groups.csv"):
        add_checksum(folder / file)
    read(folder, require_checksum=True)
    for end, _ in cuts(folder / name):
        with pytest.raises(SourceError, match=rf"{name}: "):
            read(folder, require_checksum=True)
    (folder / name).write_bytes(b"\n".join((folder / name).read_bytes().split(b"\n")[:-2])
                                + b"\n")               # one whole line less: only the sum sees it
    with pytest.raises(SourceError, match=rf"{name}: does not match its checksum"):
        read(folder, require_checksum=True)


def test_a_trailer_that_disagrees_with_the_rows_is_refused_even_when_not_required(tmp_path):
    folder = write_people_csv(tmp_path)
    text = (folder / "users.csv").read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    (folder / "users.csv").write_text("".join(lines[:-1]) + "# rows: 6\n", encoding="utf-8")
    with pytest.raises(SourceError, match=r"users.csv: 5 row\(s\) read but the trailer "
                                          r"announces 6"):
        read(folder)


def test_a_trailer_counts_records_not_physical_lines(tmp_path):
    (tmp_path / "users.csv").write_text('id,userName,title\nu-1,a@example.org,"two\nlines"\n'
                                        "# rows: 1\n", encoding="utf-8")
    assert read(tmp_path, require_trailer=True).users["u-1"].attributes["title"] == "two\nlines"


def test_a_required_trailer_that_is_missing_is_named(tmp_path):
    folder = write_people_csv(tmp_path)
    with pytest.raises(SourceError, match=r"users.csv: the last line is not a '# rows: N' "
                                          r"trailer \(\[source\] require_trailer\)"):
        read(folder, require_trailer=True)


def test_a_missing_or_malformed_checksum_file_is_named(tmp_path):
    folder = write_people_csv(tmp_path)
    with pytest.raises(SourceError, match=r"users.csv: no checksum file users.csv.sha256 beside "
                                          r"it .*sha256sum users.csv > users.csv.sha256"):
        read(folder, require_checksum=True)
    (folder / "users.csv.sha256").write_text("not a digest\n")
    with pytest.raises(SourceError, match=r"users.csv.sha256: expected a SHA-256 digest"):
        read(folder, require_checksum=True)


def test_a_groups_file_missing_beside_its_checksum_is_refused(tmp_path):
    folder = write_people_csv(tmp_path)
    for file in ("users.csv", "groups.csv"):
        add_checksum(folder / file)
    (folder / "groups.csv").unlink()
    with pytest.raises(SourceError, match=r"groups.csv: missing, but groups.csv.sha256 is there"):
        read(folder, require_checksum=True)


def test_a_file_padded_with_nul_bytes_by_a_crash_is_refused(tmp_path):
    folder = write_people_csv(tmp_path)
    users = folder / "users.csv"
    users.write_bytes(users.read_bytes()[:-40] + b"\0" * 39 + b"\n")
    with pytest.raises(SourceError, match=r"users.csv: line 7: NUL bytes"):
        read(folder)


def test_a_trailer_with_a_json_export_is_a_setting_error():
    from connectors.base import SettingError
    with pytest.raises(SettingError, match="require_trailer: is for CSV exports"):
        FileSource.Settings(path=Path("directory.json"), require_trailer=True).validate()
