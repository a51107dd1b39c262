"""Checkpoints that are never half-written.

detectron2's checkpointer writes `model_XXXX.pth` and the `last_checkpoint` tag in place:
a crash (or a kill) in the middle leaves a truncated file that `--resume` then fails to
load, or a tag pointing at it. Here both are written to a temporary file in the same
folder, flushed to disk, and renamed over the final name (`os.replace` is atomic on
POSIX and Windows), so a reader sees either the old file or the new one.
"""
import contextlib
import os
import tempfile
from typing import IO, Any, Iterator

import torch
from detectron2.checkpoint import DetectionCheckpointer

__all__ = ["atomic_open", "AtomicDetectionCheckpointer"]


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file next to `path` for writing; on success it is fsync'ed and
    renamed to `path`, on error it is removed and `path` is left untouched."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files; mode must be 'w' or 'wb', got {mode!r}")
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp_path = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", dir=folder)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp_path)
        raise
    # Make the rename itself durable (not possible on every platform/filesystem).
    with contextlib.suppress(OSError):
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


class AtomicDetectionCheckpointer(DetectionCheckpointer):
    """`DetectionCheckpointer` whose `save` and `last_checkpoint` tag are atomic.

    Only local folders are written atomically; other `PathManager` URIs fall back to
    detectron2's behaviour.
    """

    def _is_local(self) -> bool:
        return "://" not in self.save_dir

    def save(self, name: str, **kwargs: Any) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        if not self._is_local():
            return super().save(name, **kwargs)
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)

        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        self.logger.info("Saving checkpoint to {}".format(save_file))
        with atomic_open(save_file, "wb") as f:
            torch.save(data, f)
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        if not self._is_local():
            return super().tag_last_checkpoint(last_filename_basename)
        with atomic_open(os.path.join(self.save_dir, "last_checkpoint"), "w") as f:
            f.write(last_filename_basename)
