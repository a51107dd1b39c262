"""Checkpoints that are never half-written.

detectron2's checkpointer writes `model_XXXX.pth` and the `last_checkpoint` tag in place:
a crash (or a kill) in the middle leaves a truncated file that `--resume` then fails to
load, or a tag pointing at it. Here both go through `utils.file_io.atomic_open`
(temporary file in the same folder, fsync, rename), so a reader sees either the old file
or the new one; leftovers of a write that was killed are removed when a checkpointer for
that folder is created.
"""
import os
from typing import Any

import torch

from ..utils.checkpoint import ReportingCheckpointer
from ..utils.file_io import atomic_open, remove_stale_temp_files

__all__ = ["AtomicDetectionCheckpointer"]


class AtomicDetectionCheckpointer(ReportingCheckpointer):
    """`DetectionCheckpointer` whose `save` and `last_checkpoint` tag are atomic, that names
    an unreadable checkpoint file and keeps the keys of its last load that did not fit in
    `last_report` (see `ReportingCheckpointer`).

    Only local folders are written atomically; other `PathManager` URIs fall back to
    detectron2's behaviour.
    """

    def __init__(self, model, save_dir: str = "", **kwargs: Any):
        super().__init__(model, save_dir, **kwargs)
        if self.save_dir and self.save_to_disk and self._is_local():
            remove_stale_temp_files(self.save_dir)

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
