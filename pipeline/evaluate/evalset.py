"""``python -m pipeline evalset SHARDS --out SET``: a deterministic evaluation set from shards.

SET layout (``format: trajshards-evalset``, version 1)::

    SET/index.json                      the samples (key, profile, counts), the draw settings, the source
    SET/README.md                       the coordinate convention, in words
    SET/samples/<key>/frame0.png        the first frame at the profile size (the model's input image)
    SET/samples/<key>/caption.txt       the caption (UTF-8)
    SET/samples/<key>/conditions.npz    tracks (N, L, 2) float32, span (N, L) bool, anchors (N,) int64,
                                        weights (N,) float32; entity_ids (K,), entity_mask (H, W),
                                        entity_radii (K,), entity_tracks (K, L, 2), entity_visibility (K, L)
                                        when the shard has entities (and --entities)
    SET/samples/<key>/frames/f000.jpg   the real clip: the shard's JPEG frames byte for byte (the
                                        tracker's floor is measured on them)
    SET/samples/<key>/meta.json         the shard sample's meta (source, geometry, settings)
    SET/exports/...                     optional, see pipeline/evaluate/exports.py

The trajectories are drawn as the trainer draws them (pipeline/train/loader.py): among the anchors
reliable at frames 0 and 1, weighted by their ||f0||, n ~ U[1, N] (``count="trainer"``) or n = N
(``count="max"``), with a generator seeded by (seed, key); each trajectory's ``span`` is its usable
prefix (it ends at its first unreliable frame) and its coordinates past the span repeat the last
position of the span. Coordinates: x right, y down, profile pixels, pixel centers at integers.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from pipeline import storage
from pipeline.shards import expand_urls, iter_samples
from pipeline.train.loader import usable_spans
from schemas.sample import ANCHORS_MEMBER, JSON, decode_jpeg, decode_sample, frame_member, load_npz
from stages.decode import clip_rng
from stages.trajectories import draw_trajectories

SET_FORMAT = "trajshards-evalset"
SET_VERSION = 1
COUNTS = ("trainer", "max")
DRAW_PURPOSE = "evalset-trajectories"   # the clip_rng purpose of the draw
ENTITY_ARRAYS = ("entity_ids", "entity_mask", "entity_radii", "entity_tracks", "entity_visibility")

COORDINATES = ("x right, y down, in pixels of the profile size (the size of frame0.png), pixel centers at "
               "integer coordinates (the top-left pixel's center is (0, 0)).")

README = """# Evaluation set ({fmt} v{version})

{count} samples from `{source}`, drawn with seed {seed} by `python -m pipeline evalset`.

Coordinates: {coords}

Per sample, `samples/<key>/`:
- `frame0.png`: the first frame at the profile size; `caption.txt`: the caption;
- `conditions.npz`: `tracks` (N, L, 2) float32, the conditioning trajectories, and `span` (N, L) bool,
  the frames each trajectory conditions (a prefix starting at frame 0; past it the coordinates
  repeat the span's last position and mean nothing). Drawn as the trainer draws them: among the
  anchors reliable at frames 0 and 1, weighted by ||f0||, n per sample: {count_rule} (N = {max_n}).
  When the shard had entities: `entity_ids`, `entity_mask` (frame-0 id map), `entity_radii`
  (incircle radii), `entity_tracks` (K, L, 2; the centers are `entity_tracks[:, 0]`, the incircle
  centers) and `entity_visibility` (K, L) (coordinates of invisible centers are estimates);
- `frames/f000.jpg ...`: the real clip (the shard's frames, byte for byte);
- `meta.json`: the shard sample's meta.

Generate one video per key with `frame0.png`, the caption and the conditions, at the profile's size
and frame count, save it as `<key>.mp4` (any container the decoder opens), and run
`python -m pipeline evaluate SET --videos DIR --out REPORT` (docs/evaluation.md).
"""


class SetError(Exception):
    """The evaluation set cannot be read (missing, not a set, another version)."""


@dataclass
class SetSample:
    """One sample of an evaluation set (arrays are read when asked for)."""

    key: str
    folder: str
    profile: dict
    trajectories: int = 0
    entities: int = 0
    caption: str = ""

    @property
    def length(self) -> int:
        return int(self.profile["frames"])

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the profile."""
        return int(self.profile["width"]), int(self.profile["height"])

    def conditions(self) -> dict[str, np.ndarray]:
        with open(os.path.join(self.folder, "conditions.npz"), "rb") as f:
            return load_npz(f.read())

    def real_frames(self) -> np.ndarray:
        """The real clip, (L, H, W, 3) uint8 RGB: the shard's JPEG frames decoded."""
        frames = []
        for i in range(self.length):
            with open(os.path.join(self.folder, "frames", frame_member(i)), "rb") as f:
                frames.append(decode_jpeg(f.read()))
        return np.stack(frames)


@dataclass
class EvalSet:
    root: str
    index: dict
    samples: list[SetSample] = field(default_factory=list)

    def sample(self, key: str) -> SetSample:
        return next(s for s in self.samples if s.key == key)


def read_set(path: str) -> EvalSet:
    """An evaluation set written by :func:`build_evalset`; ``SetError`` when it is not one."""
    index_path = os.path.join(str(path), "index.json")
    if not os.path.isdir(str(path)):
        raise SetError(f"{path} is not a folder (an evaluation set is the folder `python -m pipeline evalset` "
                       "wrote)")
    try:
        with open(index_path, encoding="utf-8") as f:
            index = json.load(f)
    except FileNotFoundError:
        raise SetError(f"{path} has no index.json: not an evaluation set (make one with "
                       "`python -m pipeline evalset SHARDS --out SET`)") from None
    except (OSError, ValueError) as e:
        raise SetError(f"{index_path} cannot be read: {e}") from None
    if not isinstance(index, dict) or index.get("format") != SET_FORMAT:
        raise SetError(f"{index_path} is not a {SET_FORMAT} index")
    if index.get("version") != SET_VERSION:
        raise SetError(f"{index_path} has version {index.get('version')!r}; this code reads version {SET_VERSION}")
    samples = []
    try:
        for s in index["samples"]:
            samples.append(SetSample(key=str(s["key"]), folder=os.path.join(str(path), "samples", str(s["key"])),
                                     profile=dict(s["profile"]), trajectories=int(s.get("trajectories", 0)),
                                     entities=int(s.get("entities", 0)), caption=str(s.get("caption", ""))))
    except (KeyError, TypeError, ValueError) as e:
        raise SetError(f"{index_path}: malformed sample entry ({e!r})") from None
    return EvalSet(str(path), index, samples)


# ----------------------------------------------------------------------------- the draw
def draw_conditions(tracks: np.ndarray, weights: np.ndarray, reliable: np.ndarray, rng: np.random.Generator,
                    max_n: int = 8, count: str = "trainer") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The trainer's draw on one sample's anchors, without augmentation (no crop): the
    candidates are the anchors usable at frames 0 and 1 (``usable_spans``), weighted by their
    own ||f0||; ``count="trainer"`` draws n ~ U[1, max_n] (``draw_trajectories``), ``"max"``
    draws n = max_n (capped at the candidates with positive weight) by the same successive
    weighted sampling. Returns (anchor indices (N,), tracks (N, L, 2) float32 with the
    coordinates past each span held at the span's last position, span (N, L) bool)."""
    if count not in COUNTS:
        raise ValueError(f"count must be one of {COUNTS}, got {count!r}")
    usable = usable_spans(reliable)
    length = usable.shape[1]
    candidates = np.flatnonzero(usable[:, 0] & usable[:, 1]) if length > 1 else np.zeros(0, np.int64)
    if candidates.size == 0:
        return np.zeros(0, np.int64), np.zeros((0, length, 2), np.float32), np.zeros((0, length), bool)
    w = np.asarray(weights, np.float64)[candidates]
    if count == "trainer":
        picked = candidates[draw_trajectories(w, rng, max_n)]
    else:
        positive = int(np.count_nonzero(w > 0))
        k = min(int(max_n), positive if positive else candidates.size)
        p = w / w.sum() if positive else None
        picked = candidates[rng.choice(candidates.size, size=k, replace=False, p=p).astype(np.int64)]
    span = usable[picked]
    out = np.asarray(tracks, np.float32)[picked].copy()
    last = span.sum(axis=1) - 1                                 # spans are prefixes of >= 2 frames
    for i in range(len(picked)):
        out[i, last[i] + 1:] = out[i, last[i]]
    return picked.astype(np.int64), out, span


# ----------------------------------------------------------------------------- building
def _eligible(urls: Sequence[str]) -> tuple[list[tuple[str, str]], dict[str, int]]:
    """(url, key) of every sample with at least one anchor usable at frames 0 and 1, in shard
    order, and the counts of the others by reason (read from meta and anchors only)."""
    keep: list[tuple[str, str]] = []
    skipped = {"unverified_anchors": 0, "no_reliable_anchor": 0}
    for url in urls:
        for key, members in iter_samples(url, members={JSON.name, ANCHORS_MEMBER}):
            if ANCHORS_MEMBER not in members:
                skipped["no_reliable_anchor"] += 1
                continue
            z = load_npz(members[ANCHORS_MEMBER])
            if "reliable" not in z:                # schema 1, or a run without the checks: never verified
                skipped["unverified_anchors"] += 1
                continue
            usable = usable_spans(z["reliable"] & z["visible"])
            if usable.shape[1] < 2 or not (usable[:, 0] & usable[:, 1]).any():
                skipped["no_reliable_anchor"] += 1
                continue
            keep.append((url, key))
    return keep, skipped


def _write_png(path: str, rgb: np.ndarray) -> None:
    import cv2

    if not cv2.imwrite(path, np.ascontiguousarray(rgb[..., ::-1])):
        raise OSError(f"cannot write {path}")


def _profile(meta: dict, frames: np.ndarray) -> dict:
    p = dict(meta.get("profile") or {})
    length, h, w = frames.shape[:3]
    return {"name": p.get("name"), "frames": int(length), "width": int(w), "height": int(h),
            "fps": float(p.get("fps") or 0.0) or None}


def _write_sample(root: str, s: dict, seed: int, max_n: int, count: str, entities: bool) -> dict:
    key = s["key"]
    folder = os.path.join(root, "samples", key)
    os.makedirs(os.path.join(folder, "frames"), exist_ok=True)
    picked, tracks, span = draw_conditions(s["anchor_tracks"], s["anchor_weights"],
                                           s["anchor_reliable"] & s["anchor_visible"],
                                           clip_rng(seed, key, DRAW_PURPOSE), max_n, count)
    arrays: dict[str, np.ndarray] = {"tracks": tracks, "span": span, "anchors": picked,
                                     "weights": np.asarray(s["anchor_weights"], np.float32)[picked]}
    k = 0
    if entities and s.get("entity_ids") is not None:
        arrays.update({a: np.asarray(s[a]) for a in ENTITY_ARRAYS})
        k = len(s["entity_ids"])
    with open(os.path.join(folder, "conditions.npz"), "wb") as f:
        np.savez_compressed(f, **arrays)
    _write_png(os.path.join(folder, "frame0.png"), s["frames"][0])
    for i, jpg in enumerate(s["frames_jpeg"]):
        with open(os.path.join(folder, "frames", frame_member(i)), "wb") as f:
            f.write(jpg)
    with open(os.path.join(folder, "caption.txt"), "w", encoding="utf-8") as f:
        f.write(s["caption"] or "")
    with open(os.path.join(folder, "meta.json"), "w", encoding="utf-8") as f:
        json.dump(s["meta"], f, indent=1, sort_keys=True)
    return {"key": key, "profile": _profile(s["meta"], s["frames"]), "trajectories": int(len(picked)),
            "entities": int(k), "caption": s["caption"] or ""}


def build_evalset(shards: str | Iterable[str], out: str, n: int | None = None, seed: int = 0,
                  max_trajectories: int = 8, count: str = "trainer", entities: bool = True,
                  exports: Sequence[str] = (), force: bool = False) -> dict:
    """Write an evaluation set of ``n`` samples (all eligible ones when None) of the shards at
    ``shards`` (a folder, tar, brace pattern or object-store URI) to the local folder ``out``.

    The samples are chosen by ``numpy.random.default_rng(seed)`` among the samples with at least
    one anchor reliable at frames 0 and 1, kept in shard order; each sample's trajectories are
    drawn with ``clip_rng(seed, key, DRAW_PURPOSE)``: the same shards and arguments give the
    same set. ``exports``: any of ``pipeline.evaluate.exports.EXPORTS``. Returns the index."""
    from pipeline.evaluate.exports import EXPORTS, write_exports

    if count not in COUNTS:
        raise ValueError(f"--count must be one of {', '.join(COUNTS)}, got {count!r}")
    if int(max_trajectories) < 1:
        raise ValueError(f"--trajectories must be >= 1, got {max_trajectories}")
    if n is not None and int(n) < 1:
        raise ValueError(f"--n must be >= 1, got {n}")
    bad = [e for e in exports if e not in EXPORTS]
    if bad:
        raise ValueError(f"unknown export(s) {bad}; known: {', '.join(EXPORTS)}")
    if os.path.exists(out) and os.listdir(out):
        if not force:
            raise FileExistsError(f"{out} exists and is not empty (pass --force to replace it)")
        shutil.rmtree(out)
    urls = expand_urls(shards)
    if not urls:
        raise FileNotFoundError(f"no shards at {storage.redact(str(shards))}")
    eligible, skipped = _eligible(urls)
    if not eligible:
        raise ValueError(f"no sample of {storage.redact(str(shards))} has an anchor reliable at frames 0 and 1 "
                         f"(skipped: {skipped})")
    chosen = list(range(len(eligible)))
    if n is not None and int(n) < len(eligible):
        chosen = sorted(np.random.default_rng(seed).choice(len(eligible), int(n), replace=False).tolist())
    want: dict[str, set[str]] = {}
    for i in chosen:
        url, key = eligible[i]
        want.setdefault(url, set()).add(key)
    os.makedirs(out, exist_ok=True)
    entries: dict[str, dict] = {}
    for url in urls:
        if url not in want:
            continue
        for key, members in iter_samples(url, members=None):
            if key in want[url] and key not in entries:
                entries[key] = _write_sample(out, decode_sample(members, key=key), seed, max_trajectories, count,
                                             entities)
    samples = [entries[eligible[i][1]] for i in chosen if eligible[i][1] in entries]
    index = {
        "format": SET_FORMAT, "version": SET_VERSION, "source": storage.redact(str(shards)) if isinstance(shards, str)
        else [storage.redact(u) for u in shards],
        "seed": int(seed), "n": n, "max_trajectories": int(max_trajectories), "count": count,
        "entities": bool(entities), "coordinates": COORDINATES, "eligible": len(eligible), "skipped": skipped,
        "samples": samples, "exports": list(exports),
    }
    if exports:
        index["export_files"] = write_exports(
            out, [SetSample(s["key"], os.path.join(out, "samples", s["key"]), s["profile"]) for s in samples], exports)
    rule = "n = N" if count == "max" else "n ~ U[1, N], the trainer's draw"
    with open(os.path.join(out, "README.md"), "w", encoding="utf-8") as f:
        f.write(README.format(fmt=SET_FORMAT, version=SET_VERSION, count=len(samples), source=index["source"],
                              seed=seed, coords=COORDINATES, max_n=max_trajectories, count_rule=rule))
    with open(os.path.join(out, "index.json"), "w", encoding="utf-8") as f:   # last: the set is complete
        json.dump(index, f, indent=1, sort_keys=True)
    return index

