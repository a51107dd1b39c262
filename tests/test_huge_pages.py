"""Importing mask2former makes PyTorch's CPU allocator use huge pages, unless the
environment says otherwise."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(
    not Path("/sys/kernel/mm/transparent_hugepage").is_dir(), reason="kernel without transparent huge pages"
)

PROBE = "import mask2former; from mask2former.utils.huge_pages import huge_pages_active; print(huge_pages_active())"


def _active_in_fresh_process(setting, code=PROBE):
    env = dict(os.environ)
    env.pop("THP_MEM_ALLOC_ENABLE", None)
    if setting is not None:
        env["THP_MEM_ALLOC_ENABLE"] = setting
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


def test_import_requests_huge_pages():
    assert _active_in_fresh_process(None) == "True"


def test_environment_can_keep_ordinary_pages():
    assert _active_in_fresh_process("0") == "False"


def test_too_late_after_a_large_allocation():
    # the allocator reads the setting once, at the first large allocation
    code = "import torch; torch.empty(2**23, dtype=torch.uint8); " + PROBE
    assert _active_in_fresh_process(None, code) == "False"
