"""The one reader of files a job's user can write (launchers.files) and the readers built on it: a link on any
path component, a FIFO, a device, a socket, a hard link, a file larger than it says, invalid UTF-8, huge and deep
JSON, and markers of the wrong types are refused or neutralised, promptly, without an exception other than the
reader's own."""

from __future__ import annotations

import json
import os
import socket
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.api.joblogs import tail
from gateway.worker.metrics import MetricsReader
from launchers.files import (
    JobDataError,
    NotARegularFileError,
    list_job_folder,
    parse_json,
    read_job_bytes,
    read_job_file,
    stream_job_bytes,
    tail_job_bytes,
)
from launchers.runtime.markers import JobMarkers

SECRET = "admin-token-SECRET-do-not-serve"


def promptly(call: Callable[[], Any], within_s: float = 2.0) -> Any:
    """``call``'s result or exception, failing the test if it blocks (a FIFO read would block forever)."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = call()
        except BaseException as exc:  # handed to the test
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(within_s)
    assert not thread.is_alive(), "the reader blocked"
    if "error" in box:
        raise box["error"]
    return box.get("value")


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path]:
    """A job root with ``team/job/sub/log.out``, and a look-alike tree elsewhere holding the secret."""
    root = tmp_path / "root"
    (root / "team" / "job" / "sub").mkdir(parents=True)
    (root / "team" / "job" / "sub" / "log.out").write_text("line 1\nline 2\n")
    other = tmp_path / "other"
    (other / "job" / "sub").mkdir(parents=True)
    (other / "job" / "sub" / "log.out").write_text(SECRET)
    (other / "sub").mkdir()
    (other / "sub" / "log.out").write_text(SECRET)
    (other / "log.out").write_text(SECRET)
    return root, other


def test_a_regular_file_is_read_whole_or_from_its_end(tree: tuple[Path, Path]) -> None:
    root, _ = tree
    path = root / "team" / "job" / "sub" / "log.out"
    assert read_job_file(path, root=root) == "line 1\nline 2\n"
    assert read_job_file(path) == "line 1\nline 2\n"  # no root: no link anywhere from /
    assert tail_job_bytes(path, 7, root=root) == b"line 2\n"
    assert tail(path, 1, root) == ["line 2"]


@pytest.mark.parametrize("component", ["team", "job", "sub", "log.out"])
def test_a_link_on_any_component_is_refused(tree: tuple[Path, Path], component: str) -> None:
    root, other = tree
    parts = ["team", "job", "sub", "log.out"]
    where = root.joinpath(*parts[: parts.index(component) + 1])
    target = other / component if component != "team" else other  # a look-alike of what it replaces
    if where.is_dir():
        where.rename(where.with_name(where.name + ".moved"))
    else:
        where.unlink()
    where.symlink_to(target)
    path = root.joinpath(*parts)
    assert SECRET in path.read_text()  # a naive reader would serve it
    for call in (
        lambda: read_job_file(path, root=root),
        lambda: read_job_file(path),
        lambda: tail_job_bytes(path, 100, root=root),
    ):
        with pytest.raises(NotARegularFileError):
            call()
    assert tail(path, 10, root) == [] and tail(path, 10) == []


def test_the_trusted_root_itself_may_be_a_link(tree: tuple[Path, Path], tmp_path: Path) -> None:
    root, _ = tree
    (tmp_path / "alias").symlink_to(root)
    assert read_job_file(tmp_path / "alias" / "team" / "job" / "sub" / "log.out", root=tmp_path / "alias")


@pytest.mark.parametrize("path", ["team/../team/job/sub/log.out", "/etc/passwd", "", "."])
def test_a_path_that_leaves_the_root_is_refused(tree: tuple[Path, Path], path: str) -> None:
    root, _ = tree
    with pytest.raises(NotARegularFileError):
        read_job_file(root / path if path.startswith("team") else Path(path), root=root)


def test_a_missing_file_is_file_not_found(tree: tuple[Path, Path]) -> None:
    root, _ = tree
    with pytest.raises(FileNotFoundError):
        read_job_file(root / "team" / "nothing", root=root)


def test_a_fifo_is_refused_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "log.out"
    os.mkfifo(fifo)
    for call in (
        lambda: read_job_file(fifo, root=tmp_path),
        lambda: tail_job_bytes(fifo, 100, root=tmp_path),
    ):
        with pytest.raises(NotARegularFileError):
            promptly(call)
    assert promptly(lambda: tail(fifo, 5, tmp_path)) == []
    assert promptly(lambda: MetricsReader().read("j", fifo, tmp_path)) is None
    markers = JobMarkers(tmp_path, "7")
    markers.directory.mkdir()
    os.mkfifo(markers.started_path)
    os.mkfifo(markers.exit_path(0, 0))
    assert promptly(markers.started) is None and promptly(markers.exit_codes) == []


def test_a_fifo_as_a_folder_is_refused_at_once(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "sub")
    with pytest.raises(NotARegularFileError):
        promptly(lambda: read_job_file(tmp_path / "sub" / "log.out", root=tmp_path))


def test_devices_sockets_folders_and_hard_links_are_refused(tmp_path: Path) -> None:
    (tmp_path / "zero").symlink_to("/dev/zero")
    (tmp_path / "folder").mkdir()
    (tmp_path / "mine").write_text("x")
    os.link(tmp_path / "mine", tmp_path / "second-name")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(tmp_path / "sock"))
    names = ["zero", "folder", "mine", "sock"]
    try:
        os.mknod(tmp_path / "null", stat.S_IFCHR | 0o600, os.makedev(1, 3))
        names.append("null")
    except PermissionError:
        pass  # not root: the device case is the link to /dev/zero
    try:
        for name in names:
            with pytest.raises(NotARegularFileError):
                promptly(lambda n=name: read_job_file(tmp_path / n, root=tmp_path))  # type: ignore[misc]
    finally:
        server.close()
    with pytest.raises(NotARegularFileError):
        read_job_file(Path("/dev/zero"), root=Path("/dev"))


def test_the_bytes_read_are_bounded_whatever_the_size_says(tmp_path: Path) -> None:
    big = tmp_path / "log.out"
    with open(big, "wb") as fh:  # a sparse 64 GiB file: reading it whole would take the machine
        fh.truncate(64 << 30)
        fh.seek((64 << 30) - 6)
        fh.write(b"\nlast\n")
    started = time.monotonic()
    with pytest.raises(NotARegularFileError, match="larger"):
        read_job_bytes(big, 1 << 20, root=tmp_path)
    assert read_job_bytes(big, 1024, root=tmp_path, cut=True) == b"\0" * 1024
    assert tail_job_bytes(big, 6, root=tmp_path) == b"\nlast\n"
    assert tail(big, 1, tmp_path) == ["last"]
    assert time.monotonic() - started < 2
    # /proc says 0 bytes and has more: the read is bounded by what was read, not by st_size
    status = read_job_bytes(Path("/proc/self/status"), 64, root=Path("/proc/self"), cut=True)
    assert len(status) == 64
    assert len(tail_job_bytes(Path("/proc/self/status"), 64, root=Path("/proc/self"))) == 64


def test_a_file_growing_while_read_is_cut_at_the_bound(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b"x" * 100)
    stop = threading.Event()

    def grow() -> None:
        with open(path, "ab") as fh:
            while not stop.is_set():
                fh.write(b"y" * 65536)

    writer = threading.Thread(target=grow, daemon=True)
    writer.start()
    try:
        for _ in range(20):
            assert len(tail_job_bytes(path, 4096, root=tmp_path)) <= 4096
            try:
                assert len(read_job_bytes(path, 1 << 20, root=tmp_path)) <= 1 << 20
            except NotARegularFileError:
                pass
    finally:
        stop.set()
        writer.join()


def test_invalid_utf8_is_replaced_in_text_and_refused_as_json(tmp_path: Path) -> None:
    (tmp_path / "log.out").write_bytes(b"ok \xff\xfe line\n")
    assert tail(tmp_path / "log.out", 5, tmp_path) == ["ok \ufffd\ufffd line"]
    with pytest.raises(JobDataError):
        parse_json(b'{"a": "\xff"}')


def test_deep_nesting_costs_a_scan_not_a_recursion() -> None:
    for text in ("[" * 100_000, "{" * 100_000, '{"a":' * 50_000 + "1" + "}" * 50_000, "[" * 40 + "]" * 40):
        started = time.monotonic()
        with pytest.raises(JobDataError):
            parse_json(text)
        assert time.monotonic() - started < 1
    assert parse_json('{"a": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}') == {"a": "[" * 40}  # brackets in text


@pytest.mark.parametrize(
    "text, expected",
    [
        ('{"loss": NaN, "a": Infinity, "b": -Infinity}', {"loss": "NaN", "a": "Infinity", "b": "-Infinity"}),
        ('{"big": 1e999}', {"big": "1e999"}),
        ('{"n": ' + "9" * 5000 + "}", {"n": "9" * 5000}),
        ('{"n": 9223372036854775808, "m": 9223372036854775807}', {"n": "9223372036854775808", "m": 2**63 - 1}),
        ('{"s": "a\\u0000b\\ud800"}', {"s": "a\ufffdb\ufffd"}),
        ('{"\\ud800": 1}', {"\ufffd": 1}),
    ],
)
def test_numbers_and_strings_a_database_cannot_hold_become_text(text: str, expected: dict[str, Any]) -> None:
    assert parse_json(text) == expected
    json.dumps(parse_json(text), allow_nan=False).encode()  # strict JSON, encodable


@pytest.mark.parametrize("text", ["", "{", "nul", '{"a": 1} x', "\0", '"\\x"', "-", "1" * 100_000])
def test_anything_else_is_one_error(text: str) -> None:
    try:
        parse_json(text)
    except JobDataError:
        pass


def test_metrics_keep_the_good_lines_and_skip_the_bad(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    lines = [
        '{"epoch": 1, "loss": 0.5}',
        '{"epoch": 2, "loss": ' + "9" * 5000 + "}",
        "[" * 100_000,
        b"\xff\xfe".decode(errors="replace"),
        '{"epoch": 3, "loss": NaN}',
        "[1, 2]",
    ]
    path.write_text("\n".join(lines) + "\n")
    epochs = MetricsReader().read("j", path, tmp_path)
    assert epochs == [{"epoch": 1, "loss": 0.5}, {"epoch": 2, "loss": "9" * 5000}, {"epoch": 3, "loss": "NaN"}]


def test_metrics_through_a_linked_folder_are_not_read(tree: tuple[Path, Path]) -> None:
    root, other = tree
    (other / "job" / "metrics.jsonl").write_text('{"epoch": 1, "accuracy": 0.99}\n')
    (root / "team" / "job").rename(root / "team" / "job.moved")
    (root / "team" / "job").symlink_to(other / "job")
    assert MetricsReader().read("j", root / "team" / "job" / "metrics.jsonl", root) is None


def write_marker(markers: JobMarkers, path: Path, data: Any) -> None:
    markers.directory.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else json.dumps(data))


@pytest.mark.parametrize(
    "data",
    [
        {"restart": "x", "size": 4},
        {"restart": 0, "size": "4"},
        {"restart": True, "size": 4},
        {"restart": 1.5, "size": 4},
        {"restart": -1, "size": 4},
        {"restart": 10**30, "size": 4},
        {"restart": 0, "size": 0},
        {"restart": 0},
        ["restart", 0],
        '{"restart": ' + "9" * 5000 + ', "size": 4}',
        "[" * 100_000,
        "not json",
    ],
)
def test_a_started_marker_of_the_wrong_shape_counts_as_absent(tmp_path: Path, data: Any) -> None:
    markers = JobMarkers(tmp_path, "7")
    write_marker(markers, markers.started_path, data)
    assert markers.started() is None
    assert markers.exit_codes() == [] and markers.first_failure() is None


def test_a_started_marker_keeps_its_checked_fields(tmp_path: Path) -> None:
    markers = JobMarkers(tmp_path, "7")
    write_marker(markers, markers.started_path, {"restart": 2, "size": 4, "time": "soon", "extra": [1]})
    assert markers.started() == {"restart": 2, "size": 4}
    write_marker(markers, markers.started_path, {"restart": 2, "size": 4, "time": 1.5})
    assert markers.started() == {"restart": 2, "size": 4, "time": 1.5}


def test_exit_codes_of_the_wrong_shape_are_skipped(tmp_path: Path) -> None:
    markers = JobMarkers(tmp_path, "7")
    write_marker(markers, markers.exit_path(0, 0), "0\n")
    write_marker(markers, markers.exit_path(1, 0), "9" * 5000)
    write_marker(markers, markers.exit_path(2, 0), "x")
    write_marker(markers, markers.exit_path(3, 0), "3\n")
    (markers.directory / "7.0.exit.4").symlink_to(markers.exit_path(3, 0))
    (markers.directory / "7.0.exit.nope").write_text("5")
    assert [(rank, code) for _, rank, code in markers.exit_codes()] == [(0, 0), (3, 3)]
    assert markers.first_failure() == (3, 3)


def test_a_linked_markers_folder_is_not_read(tmp_path: Path) -> None:
    elsewhere = JobMarkers(tmp_path / "other", "7")
    write_marker(elsewhere, elsewhere.started_path, {"restart": 0, "size": 1})
    write_marker(elsewhere, elsewhere.exit_path(0, 0), "3\n")
    write_marker(elsewhere, elsewhere.provenance_path, {"world_size": 1})
    (tmp_path / "job").mkdir()
    (tmp_path / "job" / "markers").symlink_to(elsewhere.directory)
    markers = JobMarkers(tmp_path / "job", "7", root=tmp_path)
    assert markers.started() is None and markers.exit_codes() == [] and markers.provenance() is None
    assert JobMarkers(tmp_path / "job", "7").started() is None  # the job's folder as the root: same
    with pytest.raises(NotARegularFileError):
        list_job_folder(markers.directory, tmp_path)


def test_heartbeats_and_provenance_keep_only_fields_of_their_type(tmp_path: Path) -> None:
    markers = JobMarkers(tmp_path, "7")
    write_marker(
        markers,
        markers.heartbeat_path(0, 0),
        {"time": "x", "progress_at": 5, "host": ["n1"], "progress": "fast", "rank": "0", "beats": 2},
    )
    write_marker(markers, markers.heartbeat_path(1, 0), '{"time": 1e999, "host": "n2", "progress": {"step": 3}}')
    assert markers.heartbeats(0, 2) == {0: {"progress_at": 5, "beats": 2}, 1: {"host": "n2", "progress": {"step": 3}}}
    write_marker(
        markers,
        markers.provenance_path,
        {"world_size": "4", "versions": ["torch"], "model_files": {"a": "1", "b": 2}, "code_sha256": None, "x": 1},
    )
    assert markers.provenance() == {"model_files": {"a": "1"}, "code_sha256": None}


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_stream_is_refused_before_it_starts_and_bounded_while_it_runs(tree: tuple[Path, Path]) -> None:
    root, other = tree
    log = root / "team" / "job" / "sub" / "log.out"
    before = _open_fds()
    assert b"".join(stream_job_bytes(log, 1 << 20, root=root, chunk_bytes=4)) == b"line 1\nline 2\n"
    assert _open_fds() == before  # the descriptor went with the stream
    log.unlink()
    log.symlink_to(other / "log.out")
    with pytest.raises(NotARegularFileError):  # at the call, before any byte of an answer
        stream_job_bytes(log, 1 << 20, root=root)
    log.unlink()
    log.write_bytes(b"x" * 100)
    with pytest.raises(NotARegularFileError):
        stream_job_bytes(log, 99, root=root)
    growing = stream_job_bytes(log, 100, root=root, chunk_bytes=30)
    with open(log, "ab") as more:  # it grows after the check: no byte past the bound is read
        more.write(b"y" * 1000)
    assert b"".join(growing) == b"x" * 100
    dropped = stream_job_bytes(log, 2000, root=root)
    del dropped  # a client that went away: the descriptor is closed all the same
    assert _open_fds() == before
