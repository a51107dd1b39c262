"""Files that are never half-written: the one place where the project writes files.

Every writer (checkpoints, `last_checkpoint`, metrics, evaluator results, demo images and
json, dataset generation and preparation) goes through `atomic_open` or one of the small
wrappers below. A file is written to a temporary name in the same folder, flushed and
fsync'ed, then renamed over the final name (`os.replace` is atomic on POSIX and Windows),
so a reader, or a run after a crash or `kill -9`, sees either the old file or the new one.

The temporary name is `.<name>.tmp-<host>-<pid>-<random><ext>`: a file made on this host by a
process that no longer exists is the leftover of an interrupted write, and is removed the
first time this process writes into that folder (or when `remove_stale_temp_files` is
called, e.g. by the checkpointer at the start of a run). Files of writers still alive, or
of other hosts sharing the folder over a network filesystem, are left alone.

`mkstemp` creates files readable by their owner only (0600); the final files get the
usual `0666 & ~umask` permissions instead, like a plain `open(path, "w")`.
"""
import contextlib
import errno
import json
import os
import re
import shutil
import socket
import tempfile
import threading
import zlib
from pathlib import Path
from typing import IO, Any, Iterator, Union

__all__ = [
    "atomic_directory",
    "atomic_open",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "check_writable_folder",
    "remove_stale_temp_files",
]

PathLike = Union[str, "os.PathLike[str]"]

# `.<name>.tmp-<host>-<pid>-<random>[<ext>]`, as made by `_temp_prefix` + mkstemp.
_TEMP_NAME = re.compile(r"^\..+\.tmp-([0-9a-f]{8})-(\d+)-[^-]+$")
_HOST = format(zlib.crc32(socket.gethostname().encode()), "08x")
_MIN_FREE_BYTES = 1 << 20
_cleaned_folders = set()
_cleaned_lock = threading.Lock()


def _current_umask() -> int:
    # Linux exposes it without changing it; elsewhere set-and-restore (briefly racy).
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _temp_prefix(path: str) -> str:
    return f".{os.path.basename(path)}.tmp-{_HOST}-{os.getpid()}-"


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. EPERM: the process exists but belongs to someone else
        return True
    return True


def remove_stale_temp_files(folder: PathLike) -> list:
    """Delete the temporary files (and folders) that interrupted atomic writes left in
    `folder`: those whose writing process is gone. Returns the removed paths."""
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        match = _TEMP_NAME.match(name)
        if match is None or match.group(1) != _HOST or _pid_alive(int(match.group(2))):
            continue
        stale = os.path.join(folder, name)
        try:
            if os.path.isdir(stale) and not os.path.islink(stale):
                shutil.rmtree(stale)
            else:
                os.remove(stale)
            removed.append(stale)
        except OSError:
            pass  # removed by another process meanwhile, or not ours to remove
    return removed


def _prepare_folder(path: PathLike) -> str:
    """Create the folder of `path` if needed and, once per process, clean its leftovers."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with _cleaned_lock:
        first_time = folder not in _cleaned_folders
        _cleaned_folders.add(folder)
    if first_time:
        remove_stale_temp_files(folder)
    return folder


def _fsync_folder(folder: str) -> None:
    # Makes the rename itself durable; not possible on every platform or filesystem.
    with contextlib.suppress(OSError):
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _naming(error: OSError, path: str) -> OSError:
    """`error` as an OSError of the same kind that names the final `path` (a failed
    write(), e.g. on a full disk, names no file; a temporary name means nothing to users)."""
    if error.filename == path:
        return error
    return OSError(error.errno, error.strerror or str(error), path)


def check_writable_folder(folder: PathLike, what: str) -> None:
    """Raise an OSError naming `folder` (`what`, e.g. "--output" or "OUTPUT_DIR") if files
    cannot be created in it, or its disk is full; creates the folder if needed. Entry
    points call this before the slow work (loading a model) starts."""
    folder = os.path.abspath(os.fspath(folder))
    try:
        os.makedirs(folder, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=_temp_prefix("write-check"), dir=folder)
        os.close(fd)
        os.remove(probe)
        usage = shutil.disk_usage(folder)
    except OSError as e:
        raise OSError(e.errno, f"{what} is not writable ({e.strerror or e})", folder) from e
    if usage.free < _MIN_FREE_BYTES:
        raise OSError(errno.ENOSPC, f"{what} is on a full disk ({usage.free} bytes free)", folder)


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[str]:
    """Yield a temporary file name next to `path` for a writer that needs a file name
    (e.g. `cv2.VideoWriter`); when the block ends without error the file is fsync'ed and
    renamed to `path`, on error it is removed and `path` is left untouched."""
    path = os.fspath(path)
    try:
        folder = _prepare_folder(path)
        # The extension stays last: some writers choose the format by it.
        fd, tmp_path = tempfile.mkstemp(
            prefix=_temp_prefix(path), suffix=os.path.splitext(path)[1], dir=folder
        )
    except OSError as e:
        raise _naming(e, path) from e
    try:
        os.close(fd)
        os.chmod(tmp_path, 0o666 & ~_current_umask())
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.remove(tmp_path)
        if isinstance(e, OSError):
            raise _naming(e, path) from e
        raise
    _fsync_folder(folder)


@contextlib.contextmanager
def atomic_open(path: PathLike, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file next to `path` for writing (`mode` "w" or "wb"); when the
    block ends without error the file is flushed, fsync'ed and renamed to `path`, on error
    it is removed and `path` is left untouched."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files; mode must be 'w' or 'wb', got {mode!r}")
    with atomic_path(path) as tmp_path:
        encoding = "utf-8" if mode == "w" else None
        with open(tmp_path, mode, encoding=encoding) as f:
            yield f


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: PathLike, text: str) -> None:
    """Write `text` (utf-8) to `path` atomically."""
    with atomic_open(path, "w") as f:
        f.write(text)


def atomic_write_json(path: PathLike, obj: Any, **dump_kwargs: Any) -> None:
    """Write `obj` as json to `path` atomically; `dump_kwargs` go to `json.dump`."""
    with atomic_open(path, "w") as f:
        json.dump(obj, f, **dump_kwargs)


@contextlib.contextmanager
def atomic_directory(target: PathLike) -> Iterator[Path]:
    """Build a directory atomically: yields a temporary folder beside `target` to fill;
    on success it is renamed to `target`. If `target` appeared meanwhile (another process
    won), the temporary folder is discarded. On error nothing is left behind."""
    target = Path(target)
    _prepare_folder(target)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(str(target)), dir=target.parent))
    try:
        yield tmp
        # mkdtemp makes the folder private (0700); give it a normal folder's permissions
        os.chmod(tmp, 0o777 & ~_current_umask())
        try:
            os.replace(tmp, target)
        except OSError:
            if not target.is_dir():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
