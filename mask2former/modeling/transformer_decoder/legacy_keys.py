"""Renaming of MaskFormer-era checkpoint keys, shared by the head and the decoders.

Only keys that are actually in the old layout are renamed: a state dict that already uses
the current names loads unchanged, whether or not it carries version metadata.
"""
import logging
from typing import Callable, Dict, Optional

__all__ = ["rename_legacy_keys"]

logger = logging.getLogger(__name__)


def rename_legacy_keys(
    state_dict: Dict[str, object], prefix: str, new_name: Callable[[str], Optional[str]]
) -> int:
    """
    Rename, in place, the keys of ``state_dict`` under ``prefix`` for which ``new_name``
    (called with the key without ``prefix``) returns a new name; a rename never overwrites
    a key that is already present. Returns how many keys were renamed.
    """
    renamed = 0
    for key in list(state_dict.keys()):
        if not key.startswith(prefix):
            continue
        replacement = new_name(key[len(prefix):])
        if replacement is None:
            continue
        new_key = prefix + replacement
        if new_key == key or new_key in state_dict:
            continue
        state_dict[new_key] = state_dict.pop(key)
        renamed += 1
    if renamed:
        logger.info(f"Renamed {renamed} MaskFormer-era checkpoint keys under {prefix!r}")
    return renamed
