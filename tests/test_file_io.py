"""The atomic-write helper: permissions, cleanup on error, stale temporary files."""
import os
import stat
import subprocess
import sys

import pytest

from mask2former.utils import file_io
from mask2former.utils.file_io import (
    atomic_directory,
    atomic_open,
    atomic_path,
    atomic_write_json,
    remove_stale_temp_files,
)


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_final_files_follow_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        atomic_write_json(tmp_path / "a.json", {"x": 1})
        with atomic_directory(tmp_path / "folder") as tmp:
            (tmp / "inside.txt").write_text("y")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "a.json") == 0o640
    assert _mode(tmp_path / "folder") == 0o750
    assert (tmp_path / "a.json").read_text() == '{"x": 1}'


def test_error_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "result.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_open(target, "w") as f:
            f.write("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["result.txt"]
    with pytest.raises(ValueError, match="mode"):
        with atomic_open(target, "a"):
            pass


def test_temporary_name_keeps_the_extension(tmp_path):
    with atomic_path(tmp_path / "video.mp4") as tmp:
        assert tmp.endswith(".mp4") and os.path.dirname(tmp) == str(tmp_path)
        with open(tmp, "wb") as f:
            f.write(b"data")
    assert (tmp_path / "video.mp4").read_bytes() == b"data"


def test_only_leftovers_of_dead_writers_are_removed(tmp_path, monkeypatch):
    host = file_io._HOST
    dead = tmp_path / f".model_0001.pth.tmp-{host}-{_dead_pid()}-abc123.pth"
    alive = tmp_path / f".model_0002.pth.tmp-{host}-{os.getppid()}-def456.pth"
    other_host = tmp_path / f".x.pth.tmp-00000000-{_dead_pid()}-ghi789.pth"
    user_file = tmp_path / ".notes.tmp-backup"
    for p in (dead, alive, other_host, user_file):
        p.write_bytes(b"partial")
    assert remove_stale_temp_files(tmp_path) == [str(dead)]
    assert alive.exists() and other_host.exists() and user_file.exists()

    # The first write of a process into a folder cleans it as well.
    dead.write_bytes(b"partial")
    monkeypatch.setattr(file_io, "_cleaned_folders", set())
    atomic_write_json(tmp_path / "metrics.json", [])
    assert not dead.exists()
