"""Importing mask2former makes glibc's malloc keep freed memory for reuse, unless the
environment tunes the allocator itself."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mask2former.utils.freed_memory import _is_glibc

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(not _is_glibc(), reason="the C library is not glibc")

# Where a freed 64 MiB block's memory goes: glibc serves such a block from a mapping of its
# own unless mmap-served blocks are off, and then from its heap ("[heap]" in /proc/self/maps).
PROBE = """
import mask2former, torch
block = torch.empty(2**26, dtype=torch.uint8)
address = block.data_ptr()
for line in open("/proc/self/maps"):
    start, end = (int(x, 16) for x in line.split()[0].split("-"))
    if start <= address < end:
        print(line.rstrip().endswith("[heap]"))
"""


def _in_heap_in_fresh_process(**variables):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    env.pop("MASK2FORMER_KEEP_FREED_MEMORY", None)
    env.update(variables)
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, cwd=ROOT, capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


def test_import_keeps_freed_memory():
    assert _in_heap_in_fresh_process() == "True"


def test_environment_can_opt_out():
    assert _in_heap_in_fresh_process(MASK2FORMER_KEEP_FREED_MEMORY="0") == "False"


def test_allocator_tunables_of_the_environment_win():
    assert _in_heap_in_fresh_process(MALLOC_MMAP_THRESHOLD_="131072") == "False"
