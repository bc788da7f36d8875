"""A worker process's runtime settings: thread pools sized to the CPUs it holds, glibc kept from
returning the previous clip's memory, and the plugin modules (config ``plugins``) that register
adapters, backends or stages, imported in every process before its first clip."""
from __future__ import annotations

import functools
import os


def set_cpu_threads(cpus: float) -> int:
    """OpenCV's thread pool (and torch's, once torch is imported) sized to the CPUs a worker
    holds (``ray.num_cpus_per_worker``, at least 1): n workers on n cores then do not
    oversubscribe them, and one worker's speed is one core's. The same thread count in every
    process also keeps a CPU torch model's float results the same wherever it runs (oneDNN's
    reductions depend on it). Returns the thread count."""
    import sys

    import cv2

    n = max(1, int(round(float(cpus or 1))))
    cv2.setNumThreads(n)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)
    return n


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters


@functools.cache
def keep_freed_memory(trim_bytes: int = 512 << 20, mmap_bytes: int = 32 << 20) -> bool:
    """Let this process reuse the memory of the previous clip (glibc only; else a no-op).

    Every clip allocates the same big arrays (frames, flow, their temporaries: 10-30 MB
    each at HD). By default glibc serves such sizes with fresh mmaps or trims the heap after
    they are freed, so each clip touches new pages again: about 2,000 page faults per HD
    clip, 12-16 % of a worker's time on the development VM (docs/performance.md). Arrays
    under ``mmap_bytes`` now come from the heap, and the heap is trimmed only when more than
    ``trim_bytes`` are free at its top. The RSS of a worker then stays at its peak instead of
    falling back between clips. Returns whether glibc accepted the settings (once per
    process: later calls return the first answer)."""
    ok = False
    try:
        import ctypes
        import ctypes.util

        name = ctypes.util.find_library("c")
        if name and "libc" in name:
            libc = ctypes.CDLL(name)
            ok = bool(libc.mallopt(M_TRIM_THRESHOLD, int(trim_bytes))) and bool(libc.mallopt(M_MMAP_THRESHOLD, int(mmap_bytes)))
    except (OSError, AttributeError):
        ok = False
    return ok


def import_plugins(names) -> None:
    """Import plugin modules (dotted names, or paths of .py files) that register adapters,
    flow backends or stages; every worker process does this before processing clips."""
    import importlib
    import importlib.util
    import sys

    for name in names or ():
        if str(name).endswith(".py"):
            mod_name = "pipeline_plugin_" + os.path.splitext(os.path.basename(name))[0]
            if mod_name in sys.modules:
                continue
            spec = importlib.util.spec_from_file_location(mod_name, name)
            if spec is None or spec.loader is None:
                raise ImportError(f"cannot load plugin file {name}")
            mod = importlib.util.module_from_spec(spec)
            sys.modules[mod_name] = mod
            spec.loader.exec_module(mod)
        else:
            importlib.import_module(name)
