"""Importing mask2former makes PyTorch's CPU allocator use huge pages where it does not keep
freed memory, unless the environment says otherwise."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mask2former.utils.freed_memory import _is_glibc

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(
    not Path("/sys/kernel/mm/transparent_hugepage").is_dir(), reason="kernel without transparent huge pages"
)

PROBE = "import mask2former; from mask2former.utils.huge_pages import huge_pages_active; print(huge_pages_active())"


def _active_in_fresh_process(setting, code=PROBE, keep_freed_memory=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    env.pop("THP_MEM_ALLOC_ENABLE", None)
    env.pop("MASK2FORMER_KEEP_FREED_MEMORY", None)
    if setting is not None:
        env["THP_MEM_ALLOC_ENABLE"] = setting
    if keep_freed_memory is not None:
        env["MASK2FORMER_KEEP_FREED_MEMORY"] = keep_freed_memory
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


@pytest.mark.skipif(not _is_glibc(), reason="the C library is not glibc: freed memory is not kept")
def test_no_huge_pages_where_freed_memory_is_kept():
    assert _active_in_fresh_process(None) == "False"


def test_import_requests_huge_pages_where_freed_memory_is_returned():
    assert _active_in_fresh_process(None, keep_freed_memory="0") == "True"


def test_environment_decides_either_way():
    assert _active_in_fresh_process("0", keep_freed_memory="0") == "False"
    assert _active_in_fresh_process("1") == "True"


def test_too_late_after_a_large_allocation():
    # the allocator reads the setting once, at the first large allocation
    code = "import torch; torch.empty(2**23, dtype=torch.uint8); " + PROBE
    assert _active_in_fresh_process(None, code, keep_freed_memory="0") == "False"
