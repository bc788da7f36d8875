"""``python -m pipeline evaluate SET --videos DIR --out REPORT``: ObjMC of generated videos.

For every sample of the set: the video ``DIR/<key>.mp4`` (or another container, see
``videos.find_video``) is decoded, checked against the profile (size: resized when only the
scale differs; frame count: as the protocol says), the protocol's queries are tracked from
frame 0 and the distances scored (``protocols``). A sample without a video is listed in
``missing`` (never skipped silently); a video that cannot be used is an error row with a reason.
With ``floor=True`` the same protocol runs on the set's real frames: the tracker's floor.

REPORT/summary.json    protocol (name, every parameter), tracker (name, version, weights digest),
                       objmc (px at the profile size), objmc_norm (/ frame diagonal), evaluated,
                       missing (keys), errors (per reason), per_frame, floor (when asked), files
REPORT/samples.parquet one row per set sample: key, objmc, objmc_norm, points, pairs, frames,
                       frames_used, video, size, resized, resampled, unverified, floor_objmc,
                       error, reason
REPORT/tracks/<key>.npz  queries, tracked, verified, reference, mask, error (evaluated samples)
REPORT/plots/*.png, REPORT/overlays/{best,worst}_<key>.{png,gif}  (pipeline.evaluate.figures)
"""
from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from pipeline.evaluate.evalset import SetSample, read_set
from pipeline.evaluate.protocols import Protocol, frame_selection, get_protocol, make_queries, score
from pipeline.evaluate.trackers import TrackerSetupError, make_point_tracker
from pipeline.evaluate.videos import find_video, load_video
from stages.errors import ClipError


class EvaluateSetupError(Exception):
    """The evaluation cannot start (videos folder, protocol, tracker): exit 2."""


@dataclass
class Scored:
    """One sample scored: distances and what they were computed from."""

    err: np.ndarray          # (N, L) px, 0 where not counted
    mask: np.ndarray         # (N, L) counted
    tracked: np.ndarray      # (N, Lu, 2) the scored queries' tracks
    verified: np.ndarray     # (N, Lu) the tracker verified the position
    reference: np.ndarray    # (N, L, 2)
    queries: np.ndarray      # (Q, 2)
    frames_idx: np.ndarray   # indices of the video's frames used
    notes: dict = field(default_factory=dict)

    @property
    def objmc(self) -> float | None:
        return float(self.err[self.mask].mean()) if self.mask.any() else None


class SampleEvaluator:
    """Scores videos of the set's samples with one protocol and one tracker."""

    def __init__(self, protocol: Protocol, tracker):
        self.p, self.tracker = protocol, tracker
        self._real: dict[str, np.ndarray] = {}

    def conditions(self, sample: SetSample) -> tuple[np.ndarray, np.ndarray]:
        c = sample.conditions()
        if self.p.conditions == "entities":
            if "entity_tracks" not in c or len(c["entity_tracks"]) == 0:
                raise ClipError("no_entities", f"protocol {self.p.name} scores entities; this sample has none "
                                               "(the shard had no entities, or evalset ran with --no-entities)")
            return np.asarray(c["entity_tracks"], np.float64), np.asarray(c["entity_visibility"], bool)
        if len(c["tracks"]) == 0:
            raise ClipError("no_conditions", "the sample has no conditioning trajectory")
        return np.asarray(c["tracks"], np.float64), np.asarray(c["span"], bool)

    def real_tracks(self, sample: SetSample, queries: np.ndarray) -> np.ndarray:
        """The tracker on the real clip (the ``tracker_on_real`` reference), once per sample."""
        if sample.key not in self._real:
            self._real[sample.key] = self.tracker.track(sample.real_frames(), queries)[0]
        return self._real[sample.key]

    def score(self, sample: SetSample, frames: np.ndarray, real: bool = False) -> Scored:
        """``frames``: the video at the profile size (all its frames). ``real``: they are the
        set's own real frames (the floor)."""
        cond, cmask = self.conditions(sample)
        w, h = sample.size
        idx, note, problem = frame_selection(self.p, len(frames), sample.length)
        if problem is not None:
            raise ClipError("frame_count", problem)
        used = np.ascontiguousarray(frames[idx])
        if len(used) < 2:
            raise ClipError("frame_count", f"{len(used)} frame(s) to track")
        queries, scored_idx = make_queries(self.p, cond[:, 0], w, h)
        if self.p.reference == "tracker_on_real":
            ref_all = self.real_tracks(sample, queries)
            reference, rmask = ref_all[scored_idx].astype(np.float64), np.ones(cmask.shape, bool)
            if real:      # the same tracker on the same frames: the reference itself
                tracks, verified = ref_all, np.ones(ref_all.shape[:2], bool)
            else:
                tracks, verified = self.tracker.track(used, queries)
        else:
            reference, rmask = cond, cmask
            tracks, verified = self.tracker.track(used, queries)
        tracked, ver = tracks[scored_idx], verified[scored_idx]
        err, mask = score(self.p, reference, rmask, tracked)
        return Scored(err, mask, tracked.astype(np.float32), ver, reference.astype(np.float32),
                      queries.astype(np.float32), idx, {"resampled": note})


def _diag(sample: SetSample) -> float:
    w, h = sample.size
    return math.hypot(w, h)


def _aggregate(p: Protocol, scored: dict[str, Scored], diag: dict[str, float]) -> dict[str, Any]:
    if not scored:
        return {"objmc": None, "objmc_norm": None, "objmc_per_sample_mean": None, "pairs": 0, "evaluated": 0,
                "per_frame": []}
    pairs = sum(int(s.mask.sum()) for s in scored.values())
    per_sample = {k: s.objmc for k, s in scored.items() if s.objmc is not None}
    per_sample_norm = {k: v / diag[k] for k, v in per_sample.items()}
    if p.aggregate == "per_video":
        objmc = float(np.mean(list(per_sample.values()))) if per_sample else None
        norm = float(np.mean(list(per_sample_norm.values()))) if per_sample else None
    else:
        objmc = sum(float(s.err[s.mask].sum()) for s in scored.values()) / pairs if pairs else None
        norm = sum(float(s.err[s.mask].sum()) / diag[k] for k, s in scored.items()) / pairs if pairs else None
    length = max(s.err.shape[1] for s in scored.values())
    sums, counts = np.zeros(length), np.zeros(length)
    for s in scored.values():
        sums[:s.err.shape[1]] += s.err.sum(0)
        counts[:s.err.shape[1]] += s.mask.sum(0)
    per_frame = [round(float(a / c), 4) if c else None for a, c in zip(sums, counts)]
    return {"objmc": objmc, "objmc_norm": norm,
            "objmc_per_sample_mean": float(np.mean(list(per_sample.values()))) if per_sample else None,
            "pairs": pairs, "evaluated": len(scored), "per_frame": per_frame}


def _unverified(s: Scored) -> tuple[int, int]:
    """(counted pairs whose tracked position the tracker did not verify, counted pairs)."""
    m = s.mask[:, :s.verified.shape[1]]
    return int((~s.verified[m]).sum()), int(m.sum())


def evaluate(set_path: str, videos: str, out: str, protocol: str = "objmc", tracker: str = "flow",
             cotracker_checkpoint: str | None = None, device: str = "auto", floor: bool = False,
             overlays: int = 2, plots: bool = True, log: Callable[[str], None] = lambda s: None) -> dict:
    """Evaluate the videos in ``videos`` against the set at ``set_path``; write the report to
    ``out``; return the summary (see the module docstring). ``SetError`` for an unreadable set,
    ``EvaluateSetupError`` when the evaluation cannot start."""
    es = read_set(set_path)
    try:
        p = get_protocol(protocol)
    except ValueError as e:
        raise EvaluateSetupError(str(e)) from None
    if not os.path.isdir(videos):
        raise EvaluateSetupError(f"--videos {videos} is not a folder")
    try:
        trk = make_point_tracker(tracker, cotracker_checkpoint=cotracker_checkpoint, device=device)
    except TrackerSetupError as e:
        raise EvaluateSetupError(str(e)) from None
    ev = SampleEvaluator(p, trk)
    for sub in ("tracks", "plots", "overlays"):      # a report folder holds one evaluation's files
        if os.path.isdir(os.path.join(out, sub)):
            shutil.rmtree(os.path.join(out, sub))
    os.makedirs(os.path.join(out, "tracks"), exist_ok=True)
    rows, scored, floors, missing, paths = [], {}, {}, [], {}
    diag = {s.key: _diag(s) for s in es.samples}
    for i, sample in enumerate(es.samples):
        row: dict[str, Any] = {"key": sample.key, "objmc": None, "objmc_norm": None, "points": None, "pairs": None,
                               "frames": None, "frames_used": None, "video": None, "size": None, "resized": None,
                               "resampled": None, "unverified": None, "floor_objmc": None, "error": None,
                               "reason": None}
        path = find_video(videos, sample.key)
        if path is None:
            missing.append(sample.key)
            row.update(error=f"no video {sample.key}.mp4 (or another container) in {videos}", reason="missing")
        else:
            paths[sample.key] = path
            row["video"] = os.path.basename(path)
            try:
                frames, resized = load_video(path, sample)
                row.update(frames=int(len(frames)), size=f"{frames.shape[2]}x{frames.shape[1]}", resized=resized)
                s = ev.score(sample, frames)
            except ClipError as e:
                row.update(error=e.message, reason=e.reason)
            except OSError as e:       # the set's files of this sample (conditions, frames)
                row.update(error=f"{type(e).__name__}: {e}", reason="set_sample_unreadable")
            except Exception as e:  # noqa: BLE001 - one bad sample is a row, not the end of the evaluation
                row.update(error=f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}",
                           reason="internal")
            else:
                scored[sample.key] = s
                row.update(objmc=s.objmc, objmc_norm=None if s.objmc is None else s.objmc / diag[sample.key],
                           points=int(len(s.reference)), pairs=int(s.mask.sum()), frames_used=int(len(s.frames_idx)),
                           resampled=s.notes.get("resampled"))
                bad, counted = _unverified(s)
                row["unverified"] = round(bad / counted, 4) if counted else None
                np.savez_compressed(os.path.join(out, "tracks", f"{sample.key}.npz"), queries=s.queries,
                                    tracked=s.tracked, verified=s.verified, reference=s.reference, mask=s.mask,
                                    error=s.err.astype(np.float32), frames=s.frames_idx)
        if floor:
            try:
                f = ev.score(sample, sample.real_frames(), real=True)
                floors[sample.key] = f
                row["floor_objmc"] = f.objmc
            except (ClipError, OSError):
                pass
        rows.append(row)
        log(f"[{i + 1}/{len(es.samples)}] {sample.key}: " + (
            f"ObjMC {row['objmc']:.3f} px" if row["objmc"] is not None else f"{row['reason']}: {row['error']}"))
    agg = _aggregate(p, scored, diag)
    errors: dict[str, int] = {}
    for r in rows:
        if r["reason"] and r["reason"] != "missing":
            errors[r["reason"]] = errors.get(r["reason"], 0) + 1
    summary: dict[str, Any] = {
        "protocol": p.params(), "tracker": trk.describe(), "objmc": agg["objmc"], "objmc_norm": agg["objmc_norm"],
        "objmc_per_sample_mean": agg["objmc_per_sample_mean"], "evaluated": agg["evaluated"],
        "missing": missing, "errors": errors, "samples": len(es.samples), "pairs": agg["pairs"],
        "per_frame": agg["per_frame"], "set": os.path.abspath(set_path), "videos": os.path.abspath(videos),
        "unverified": _pooled_unverified(scored),
        "floor": None,
    }
    if floor:
        fa = _aggregate(p, floors, diag)
        summary["floor"] = {"objmc": fa["objmc"], "objmc_norm": fa["objmc_norm"], "evaluated": fa["evaluated"],
                            "per_frame": fa["per_frame"], "on": "the set's real frames (the shard's JPEGs)"}
    _write_rows(os.path.join(out, "samples.parquet"), rows)
    files = {"samples": "samples.parquet", "tracks": "tracks/"}
    if plots or overlays:
        from pipeline.evaluate.figures import write_figures

        files.update(write_figures(out, es, ev, rows, scored, paths, summary, overlays=overlays, plots=plots))
    summary["files"] = files
    with open(os.path.join(out, "summary.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=1, sort_keys=True)
    return summary


def _pooled_unverified(scored: dict[str, Scored]) -> float | None:
    counts = [_unverified(s) for s in scored.values()]
    total = sum(c for _, c in counts)
    return round(sum(b for b, _ in counts) / total, 4) if total else None


def _write_rows(path: str, rows: list[dict]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("key", pa.string()), ("objmc", pa.float64()), ("objmc_norm", pa.float64()),
                        ("points", pa.int64()), ("pairs", pa.int64()), ("frames", pa.int64()),
                        ("frames_used", pa.int64()), ("video", pa.string()), ("size", pa.string()),
                        ("resized", pa.string()), ("resampled", pa.string()), ("unverified", pa.float64()),
                        ("floor_objmc", pa.float64()), ("error", pa.string()), ("reason", pa.string())])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)


def format_summary(summary: dict) -> str:
    """The printed summary of an evaluation."""
    p, t = summary["protocol"], summary["tracker"]
    lines = [f"protocol {p['name']} ({p['source']}); tracker {t['name']} ({t['version']}"
             + (f", weights {t['weights_digest'][:19]}..." if t.get("weights_digest") else "") + ")"]
    lines.append(f"evaluated {summary['evaluated']} of {summary['samples']} sample(s); "
                 f"missing {len(summary['missing'])}; errors {sum(summary['errors'].values())}")
    if summary["missing"]:
        shown = ", ".join(summary["missing"][:10]) + (" ..." if len(summary["missing"]) > 10 else "")
        lines.append(f"  missing videos: {shown}")
    for reason, n in sorted(summary["errors"].items()):
        lines.append(f"  error {reason}: {n}")
    if summary["objmc"] is not None:
        lines.append(f"ObjMC {summary['objmc']:.3f} px ({summary['objmc_norm']:.5f} of the frame diagonal) over "
                     f"{summary['pairs']} (point, frame) pairs"
                     + (f"; unverified by the tracker: {summary['unverified']:.1%}" if summary["unverified"] else ""))
    fl = summary.get("floor")
    if fl is not None and fl["objmc"] is not None:
        lines.append(f"tracker floor (same protocol on the real frames): {fl['objmc']:.3f} px "
                     f"({fl['objmc_norm']:.5f}) over {fl['evaluated']} sample(s)")
    return "\n".join(lines)
