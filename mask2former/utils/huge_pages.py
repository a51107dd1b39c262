"""Transparent huge pages for PyTorch's large CPU tensors, where freed memory is returned.

At 800x1088 an inference allocates gigabytes of fresh tensors (feature maps, upsampled
masks, the (K, H, W) semantic scores). Where the allocator returns freed memory to the
system (glibc's default, see `freed_memory`), the kernel faults in and zeroes every page of
each new tensor on first write; with the usual 4 KiB pages that cost about a fifth of the
whole inference on an Intel Xeon. PyTorch's allocator backs allocations of 2 MiB or more
with huge pages when the environment variable `THP_MEM_ALLOC_ENABLE` is set, which cuts
the faults 512-fold. Where freed memory is kept (the default after importing
`mask2former`), there are few faults left to cut, and huge pages made things slower on an
AMD EPYC: their 2 MiB-aligned blocks kept growing the heap, each new huge page zeroed
whole; without them a float32 training step took 0.89-0.90x and an inference 0.93x of
the time with them.
So importing `mask2former` requests them only when it does not keep freed memory.

PyTorch reads the variable once, at the first large allocation, so it must be set before
any; `request_huge_pages` leaves a value already in the environment as it is
(`THP_MEM_ALLOC_ENABLE=0` keeps the usual pages, `=1` asks for huge ones).
"""
import os

import torch

__all__ = ["request_huge_pages", "huge_pages_active"]

ENV_VAR = "THP_MEM_ALLOC_ENABLE"
_HUGE_PAGE_BYTES = 2 * 2**20


def request_huge_pages():
    """Asks PyTorch's CPU allocator for huge pages, unless the environment decides it.
    Effective only if no tensor of 2 MiB or more has been allocated in this process yet."""
    os.environ.setdefault(ENV_VAR, "1")


def huge_pages_active() -> bool:
    """Whether PyTorch's CPU allocator asks for huge pages in this process: the memory of
    a new large tensor is then marked for them ("hg" among its mapping's flags in
    /proc/self/smaps). False where that file does not exist (not Linux)."""
    probe = torch.empty(2 * _HUGE_PAGE_BYTES, dtype=torch.uint8)
    address = probe.data_ptr()
    try:
        with open("/proc/self/smaps") as f:
            inside = False
            for line in f:
                fields = line.split()
                if not fields:
                    continue
                if "-" in fields[0] and ":" not in fields[0]:  # a mapping's first line
                    start, end = (int(x, 16) for x in fields[0].split("-"))
                    inside = start <= address < end
                elif inside and fields[0] == "VmFlags:":
                    return "hg" in fields[1:]
    except OSError:
        pass
    return False
