"""Workers reuse the memory of the previous clip (pipeline.clip.runtime.keep_freed_memory)."""
from __future__ import annotations

import subprocess
import sys

import pytest

CHILD = r"""
import resource, sys
import numpy as np
sys.path.insert(0, ".")
import pipeline.clip.loop  # the modules a worker has loaded (their libraries shape the heap)
if sys.argv[1] == "tuned":
    from pipeline.clip.runtime import keep_freed_memory
    assert keep_freed_memory()
def clip():  # the big arrays of an HD clip: frames, flow, its quantised copy, a temporary
    frames = np.ones((16, 320, 576, 3), np.uint8)
    flow = np.ones((15, 2, 320, 576), np.float32)
    q = (flow * 16).astype(np.int32)
    out = q.astype(np.float32)
    del flow, q
    tmp = np.ones((40 << 20) // 8)
    return out[:1].copy()
clip()
f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    clip()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) // 5)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_a_clip_sized_array_reuses_freed_pages():
    """Default glibc: the arrays of every clip land on fresh pages again (about 2,000 page
    faults per clip); tuned, the second and later clips reuse the freed heap pages."""
    def faults(mode):
        out = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, check=True,
                             cwd=__file__.rsplit("/tests/", 1)[0])
        return int(out.stdout.strip())

    # Best of 3 processes: in some processes (address-space layout, about 1 in 4 here) the heap
    # cannot grow in place and the tuned run still faults ~500 times per clip: 4x fewer than
    # the default, not 100x. Every tuned run must beat the default; the best one by 10x.
    default = min(faults("default") for _ in range(3))
    tuned = [faults("tuned") for _ in range(3)]
    assert default > 500, default
    assert min(tuned) * 10 < default and max(tuned) < default, (tuned, default)
