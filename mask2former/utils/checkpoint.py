"""Loading weights with a clear verdict on whether they fit the model.

detectron2's `DetectionCheckpointer` loads what matches and only *logs* the rest, so a
checkpoint for another config (other number of classes, queries, backbone) quietly
yields a half-random model. `load_weights_checked` turns that log into an error that
names the missing, unexpected and shape-mismatched keys, unless partial loading is
asked for explicitly (e.g. fine-tuning from a checkpoint with another class count).

Published Mask2Former checkpoints are pickles of
`{"model": {name: numpy array}, "__author__": ..., "matching_heuristics": ...}`;
`save_in_published_format` writes a model in exactly that format.
"""
import logging
import os
import pickle
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.utils.file_io import PathManager

from .errors import UserInputError
from .file_io import atomic_write_bytes

__all__ = [
    "CheckpointMismatchError",
    "UnreadableCheckpointError",
    "IncompatibleKeysReport",
    "ReportingCheckpointer",
    "compare_state_dict_keys",
    "load_weights_checked",
    "save_in_published_format",
]

logger = logging.getLogger(__name__)


@dataclass
class IncompatibleKeysReport:
    """Keys that did not load. `shape_mismatched` holds (key, checkpoint shape, model shape)."""

    missing: List[str] = field(default_factory=list)
    unexpected: List[str] = field(default_factory=list)
    shape_mismatched: List[Tuple[str, tuple, tuple]] = field(default_factory=list)

    @property
    def is_clean(self) -> bool:
        return not (self.missing or self.unexpected or self.shape_mismatched)

    def describe(self, max_keys: int = 20) -> str:
        """A few lines naming the offending keys (at most `max_keys` per kind)."""

        def _listing(title, items):
            shown = [str(x) for x in items[:max_keys]]
            more = f"\n    ... and {len(items) - max_keys} more" if len(items) > max_keys else ""
            return f"  {title} ({len(items)}):\n    " + "\n    ".join(shown) + more

        parts = []
        if self.missing:
            parts.append(_listing("missing in the checkpoint", self.missing))
        if self.unexpected:
            parts.append(_listing("unexpected (not in the model)", self.unexpected))
        if self.shape_mismatched:
            rows = [
                f"{key}: checkpoint {tuple(ckpt)} vs model {tuple(model)}"
                for key, ckpt, model in self.shape_mismatched
            ]
            parts.append(_listing("shape mismatched", rows))
        return "\n".join(parts) if parts else "  all keys match"

    def summary(self, max_keys: int = 3) -> str:
        """One line naming the first few offending keys of each kind."""

        def _first(items):
            more = f", ... ({len(items)} in all)" if len(items) > max_keys else ""
            return ", ".join(str(x) for x in items[:max_keys]) + more

        parts = []
        if self.shape_mismatched:
            rows = [
                f"{key}: checkpoint {tuple(ckpt)} vs model {tuple(model)}"
                for key, ckpt, model in self.shape_mismatched
            ]
            parts.append(f"shape mismatched ({len(rows)}): {_first(rows)}")
        if self.missing:
            parts.append(f"missing in the checkpoint ({len(self.missing)}): {_first(self.missing)}")
        if self.unexpected:
            parts.append(
                f"unexpected (not in the model) ({len(self.unexpected)}): {_first(self.unexpected)}"
            )
        return "; ".join(parts) if parts else "all keys match"


class CheckpointMismatchError(UserInputError, RuntimeError):
    """The weights file does not fit the model built from the config."""

    def __init__(self, path: str, report: IncompatibleKeysReport):
        self.path = path
        self.report = report
        super().__init__(
            f"weights '{path}' (MODEL.WEIGHTS) do not fit the model built from the config: "
            f"{report.summary()}. Use the config the weights were trained with (number of "
            "classes MODEL.SEM_SEG_HEAD.NUM_CLASSES, queries, backbone), or pass "
            "--allow-partial-weights to load them anyway."
        )


class UnreadableCheckpointError(UserInputError, RuntimeError):
    """The checkpoint file exists but cannot be read (truncated, corrupt, not a checkpoint)."""


def compare_state_dict_keys(
    model_state: Dict[str, torch.Tensor], checkpoint_state: Dict[str, object]
) -> IncompatibleKeysReport:
    """Strict name-and-shape comparison of two state dicts (no name heuristics).

    Values may be tensors or numpy arrays; only their shapes are used.
    """
    report = IncompatibleKeysReport()
    report.missing = [k for k in model_state if k not in checkpoint_state]
    report.unexpected = [k for k in checkpoint_state if k not in model_state]
    for key, value in checkpoint_state.items():
        if key in model_state:
            ckpt_shape = tuple(np.shape(value))
            model_shape = tuple(model_state[key].shape)
            if ckpt_shape != model_shape:
                report.shape_mismatched.append((key, ckpt_shape, model_shape))
    return report


class ReportingCheckpointer(DetectionCheckpointer):
    """A `DetectionCheckpointer` that keeps the incompatible keys of its last load
    in `last_report` instead of only logging them."""

    def __init__(self, model, save_dir="", **kwargs):
        super().__init__(model, save_dir, **kwargs)
        self.last_report = None

    def load(self, path, checkpointables=None):
        # fvcore only asserts that the file exists, and torch reports a truncated file as
        # a chained PytorchStreamReader error: name the file instead.
        if path and "://" not in path and not os.path.isfile(path):
            raise FileNotFoundError(f"Checkpoint file '{path}' does not exist.")
        return super().load(path, checkpointables=checkpointables)

    def _load_file(self, filename):
        try:
            loaded = super()._load_file(filename)
            if not isinstance(loaded.get("model"), dict):
                raise ValueError("it holds no state dict under 'model'")
        except Exception as e:
            raise UnreadableCheckpointError(
                f"Cannot read checkpoint '{filename}' (truncated, corrupt or not a "
                f"checkpoint: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
            ) from e
        return loaded

    def _load_model(self, checkpoint):
        incompatible = super()._load_model(checkpoint)
        if incompatible is not None:
            self.last_report = IncompatibleKeysReport(
                missing=list(incompatible.missing_keys),
                unexpected=list(incompatible.unexpected_keys),
                shape_mismatched=[tuple(x) for x in incompatible.incorrect_shapes],
            )
            # Keys that were shape-mismatched are also reported missing by torch: list them once.
            mismatched = {k for k, _, _ in self.last_report.shape_mismatched}
            self.last_report.missing = [
                k for k in self.last_report.missing if k not in mismatched
            ]
            if not self.last_report.is_clean:
                logger.warning(f"Not loaded from the checkpoint: {self.last_report.summary()}")
        return incompatible


def load_weights_checked(
    model: torch.nn.Module, path: str, allow_partial: bool = False
) -> IncompatibleKeysReport:
    """Load `path` (a .pkl in detectron2/published format, a .pth such as a trained
    model_final.pth, or a URL detectron2's PathManager can fetch) into `model`.

    Raises:
        FileNotFoundError: `path` does not exist.
        UnreadableCheckpointError: `path` is truncated, corrupt or not a checkpoint.
        CheckpointMismatchError: some keys are missing, unexpected or of another shape,
            and `allow_partial` is False. The model may then be partly loaded.
    Returns:
        the report of incompatible keys (clean when everything loaded).
    """
    if "://" in path:  # detectron2:// or http(s):// URLs are fetched into a local cache
        path = PathManager.get_local_path(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Weights file '{path}' (MODEL.WEIGHTS) does not exist.")
    checkpointer = ReportingCheckpointer(model)
    checkpointer.load(path, checkpointables=[])
    report = checkpointer.last_report or IncompatibleKeysReport()
    if not report.is_clean:
        if not allow_partial:
            raise CheckpointMismatchError(path, report)
        logger.warning(f"Partially loaded weights from '{path}':\n{report.describe()}")
    return report


def save_in_published_format(
    state_dict: Dict[str, torch.Tensor],
    path: str,
    author: str = "mask2former",
    matching_heuristics: bool = False,
) -> None:
    """Pickle `state_dict` as `{"model": {name: numpy}, "__author__", "matching_heuristics"}`,
    the format of the published checkpoints and of detectron2 model-zoo .pkl files."""
    model = {k: v.detach().cpu().numpy() for k, v in state_dict.items()}
    payload = {"model": model, "__author__": author, "matching_heuristics": matching_heuristics}
    atomic_write_bytes(path, pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL))
