"""Helpers shared by the reliability tests (each test file imports it by path).

Everything here builds real inputs (mp4 files written by pipeline.testdata.synthetic / PyAV) and
reads real outputs (tar shards, status parquet); nothing is mocked.
"""
from __future__ import annotations

import csv
import glob
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PY = os.path.join(REPO, ".venv", "bin", "python") if os.path.exists(os.path.join(REPO, ".venv", "bin", "python")) \
    else sys.executable

# A plugin (imported by every worker and isolation child through ``cfg.plugins``) that
# registers the flow backend "faulty": DIS flow, except that a clip whose frames are all
# saturated red segfaults the process (a real SIGSEGV) and one whose frames are all
# saturated blue hangs (a real sleep). The test corpus contains one clip of each.
FAULTY_PLUGIN = '''
import ctypes
import time

import numpy as np

from stages.flow.base import register_flow_backend
from stages.flow.cpu import DISFlow


def _uniform(frames, rgb):
    m = frames.reshape(-1, 3).mean(0)
    return all((m[i] > 200) if c else (m[i] < 40) for i, c in enumerate(rgb))


class FaultyFlow(DISFlow):
    name = "faulty"

    def forward(self, frames):
        if _uniform(frames, (1, 0, 0)):
            ctypes.string_at(0)  # SIGSEGV
        if _uniform(frames, (0, 0, 1)):
            time.sleep(3600)
        return super().forward(frames)


register_flow_backend("faulty", lambda preset="ultrafast", **kw: FaultyFlow(preset=preset))
'''


def write_plugin(folder) -> str:
    path = os.path.join(str(folder), "faulty_flow_plugin.py")
    with open(path, "w") as f:
        f.write(FAULTY_PLUGIN)
    return path


# ----------------------------------------------------------------------------- inputs
def scene_frames(seed: int, width: int = 320, height: int = 192, frames: int = 36) -> np.ndarray:
    from pipeline.testdata.synthetic import random_scene

    return random_scene(seed, width=width, height=height, num_frames=frames).frames


def uniform_frames(rgb, width: int = 160, height: int = 96, frames: int = 30) -> np.ndarray:
    return np.broadcast_to(np.asarray(rgb, np.uint8), (frames, height, width, 3)).copy()


def write_clip(path, frames, fps: float = 12.0) -> str:
    from pipeline.testdata.synthetic import write_mp4

    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    return write_mp4(str(path), frames, fps)


def write_csv(path, rows) -> None:
    """rows: (videoid, page_dir, duration, name) tuples -> a WebVid CSV."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(("videoid", "contentUrl", "duration", "page_dir", "name"))
        for vid, page, dur, name in rows:
            w.writerow((vid, "", dur, page, name))


def small_dataset(root, n: int = 12, distinct: int = 4, frames: int = 36) -> str:
    """A WebVid-layout dataset of ``n`` good clips (``distinct`` rendered scenes, copied)."""
    import shutil

    root = str(root)
    scenes = [os.path.join(root, "scenes", f"s{i}.mp4") for i in range(distinct)]
    for i, p in enumerate(scenes):
        write_clip(p, scene_frames(100 + i, frames=frames))
    rows = []
    for k in range(n):
        vid = f"clip{k:04d}"
        dst = os.path.join(root, "v", f"{vid}.mp4")
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copyfile(scenes[k % distinct], dst)
        rows.append((vid, "v", "PT00H00M03S", f"synthetic clip number {k}"))
    write_csv(os.path.join(root, "webvid.csv"), rows)
    return root


# ----------------------------------------------------------------------------- outputs
def read_tar(path) -> dict[str, dict[str, bytes]]:
    """key -> {ext: bytes}; raises on a truncated or corrupt tar; asserts unique members."""
    out: dict[str, dict[str, bytes]] = {}
    with tarfile.open(path) as tf:
        for m in tf:
            key, _, ext = m.name.partition(".")
            assert ext not in out.get(key, {}), f"{path}: member {m.name} twice"
            out.setdefault(key, {})[ext] = tf.extractfile(m).read()
    return out


def final_tars(out) -> list[str]:
    return sorted(glob.glob(os.path.join(str(out), "*.tar")))


def sample_hashes(out) -> dict[str, str]:
    """key -> sha256 over the sample's members (name + bytes), from every tar under its final
    name; asserts that no key appears twice and that every sample has its required members."""
    hashes: dict[str, str] = {}
    for t in final_tars(out):
        for key, members in read_tar(t).items():
            assert key not in hashes, f"sample {key} appears in two tars"
            assert {"json", "txt", "flow.pfz", "anchors.npz"} <= set(members), (key, sorted(members))
            h = hashlib.sha256()
            for name in sorted(members):
                h.update(name.encode() + b"\0" + members[name])
            hashes[key] = h.hexdigest()
    return hashes


def tar_bytes(out) -> dict[str, str]:
    return {os.path.basename(t): hashlib.sha256(open(t, "rb").read()).hexdigest() for t in final_tars(out)}


def status_rows(out) -> list[dict]:
    import pyarrow.parquet as pq

    rows = []
    for p in sorted(glob.glob(os.path.join(str(out), "*-[0-9][0-9][0-9][0-9][0-9][0-9].parquet"))):
        rows += pq.read_table(p).to_pylist()
    return rows


def manifest_rows(out) -> list[dict]:
    import pyarrow.parquet as pq

    return pq.read_table(os.path.join(str(out), "manifest.parquet")).to_pylist()


def check_accounting(out) -> dict[str, dict]:
    """The invariant: every manifest clip is in exactly one status row (ok / error /
    filtered); ok clips are exactly the tar samples; errors.parquet / filtered.parquet hold
    exactly the others, with a reason and a message. Returns clip_id -> status row."""
    import pyarrow.parquet as pq

    manifest = manifest_rows(out)
    status = status_rows(out)
    ids = [r["clip_id"] for r in status]
    assert len(ids) == len(set(ids)), "a clip has two status rows"
    assert sorted(ids) == sorted(r["clip_id"] for r in manifest), "status rows != manifest rows"
    by_id = {r["clip_id"]: r for r in status}
    ok = {i for i, r in by_id.items() if r["status"] == "ok"}
    assert set(sample_hashes(out)) == ok, "tar samples != ok clips"
    for name, st in (("errors", "error"), ("filtered", "filtered")):
        t = pq.read_table(os.path.join(str(out), f"{name}.parquet")).to_pylist()
        assert sorted(r["clip_id"] for r in t) == sorted(i for i, r in by_id.items() if r["status"] == st)
        assert all(r["reason"] and r["message"] for r in t), t
    assert sum(r["status"] in ("ok", "error", "filtered") for r in status) == len(manifest)
    index = json.load(open(os.path.join(str(out), "index.json")))
    assert index["ok"] + index["error"] + index["filtered"] == index["clips"] == len(manifest)
    return by_id


def assert_no_pickle(out) -> int:
    """Every member of every shard is free of pickles: .npz/.npy arrays load with
    allow_pickle=False and hold no object dtype; no member is a pickle stream."""
    n = 0
    for t in final_tars(out):
        for key, members in read_tar(t).items():
            for name, data in members.items():
                n += 1
                assert not data.startswith(b"\x80") or name.endswith("jpg"), f"{key}.{name} looks like a pickle"
                if name.endswith(".npz"):
                    with np.load(io.BytesIO(data), allow_pickle=False) as z:
                        for k in z.files:
                            assert z[k].dtype != object, f"{key}.{name}:{k} has object dtype"
                elif name.endswith(".npy"):
                    assert np.load(io.BytesIO(data), allow_pickle=False).dtype != object
                elif name == "json":
                    json.loads(data)
                elif name == "txt":
                    data.decode("utf-8")
    return n


HIDE_MODULES = '''
import sys


class _Hide:
    """Makes importing {names} fail, as on a machine where they are not installed."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {names!r}:
            raise ImportError(f"No module named {{name!r}} (hidden by {{__file__}})")
        return None


sys.meta_path.insert(0, _Hide())
'''


def hide_modules_env(folder, *names: str) -> dict[str, str]:
    """The environment of a process (and the Ray workers and isolation children it starts)
    in which importing ``names`` fails: a ``sitecustomize.py`` in ``folder`` on PYTHONPATH."""
    os.makedirs(str(folder), exist_ok=True)
    with open(os.path.join(str(folder), "sitecustomize.py"), "w") as f:
        f.write(HIDE_MODULES.format(names=tuple(names)))
    return {"PYTHONPATH": os.pathsep.join([str(folder), REPO, os.environ.get("PYTHONPATH", "")])}


def cli(args, timeout=600, env=None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "pipeline", "run", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})}, **kw)


def kill_when(proc: subprocess.Popen, cond, what: str, timeout: float = 300, poll_s: float = 0.01) -> list:
    """SIGKILL a running driver as soon as ``cond()`` holds (it must not end before); returns
    the processes it had started (isolation children), so a test can check none outlives it."""
    import signal
    import time

    import psutil

    deadline = time.time() + timeout
    while not cond():
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"run ended before '{what}':\n{((err or '') + (out or ''))[-3000:]}")
        assert time.time() < deadline, f"timed out waiting for '{what}'"
        time.sleep(poll_s)
    try:
        children = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    return children
