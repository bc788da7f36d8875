"""Look at samples: a PNG contact sheet and an animated GIF per sample.

``python -m pipeline preview URL --n 8 --out DIR`` writes, for each of the first n samples,
``DIR/KEY.png`` and ``DIR/KEY.gif``. Every frame is shown four ways:

1. **anchors**: the frame with every anchor's track so far: its *reliable* span
   (``anchors.npz:reliable``, docs/trajectories.md) as a coloured polyline with a dot where
   it is now, and the rest of the track, still in frame but no longer reliable, as a thin
   grey line with a small grey dot (schema-1 samples, unverified, draw every visible part
   in colour and say so);
2. **draw**: one draw of the paper's Trajectory Sampler as the trainer would make it
   (``stages.trajectories.draw_trajectories`` on the weights of the anchors reliable in
   frames 0 and 1, n ~ U[1, N]): the drawn tracks' reliable span, thick, with the part
   still to come faint, and the part past the span (which the trainer never uses) as a
   thin grey line;
3. **entities**: frame 0 tinted by the entity mask; on every frame each entity's circle
   (tracked center, incircle radius) and its track so far; nothing where the entity is
   invisible. Samples without entities say so;
4. **flow**: ``flow[t]`` (frame t -> t+1) in the Middlebury colour wheel
   (:mod:`pipeline.tools.colorwheel`), saturated at the clip's 99th-percentile magnitude (the
   key is in the corner); the last frame has no outgoing flow.

The contact sheet has these four rows for ``columns`` frames evenly spread over the clip,
under a header with the key, the caption and the motion statistics; the GIF plays all L
frames as a 2 x 2 grid at the profile's frame rate.
"""
from __future__ import annotations

import colorsys
import os
from typing import Any, Iterable

import numpy as np

from pipeline.tools.colorwheel import flow_to_color, wheel_legend

PANELS = ("anchors", "draw", "entities", "flow")
UNRELIABLE_RGB = (150, 150, 150)   # anchors past their reliable span
_SHIFT = 4                      # cv2 fixed-point bits for sub-pixel drawing
_ONE = 1 << _SHIFT
_HEADER_H = 46
_LABEL_W = 0


def _palette(n: int, offset: float = 0.0, sat: float = 0.85, val: float = 1.0) -> np.ndarray:
    """n distinct RGB colours (golden-ratio hue steps), uint8 (n, 3)."""
    golden = 0.6180339887498949
    return np.array([[int(255 * c) for c in colorsys.hsv_to_rgb((offset + i * golden) % 1.0, sat, val)]
                     for i in range(n)], np.uint8).reshape(n, 3)


def _fix(p: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(p, np.float64) * _ONE).astype(np.int32)


_FONT = 0  # cv2.FONT_HERSHEY_SIMPLEX


def _fit_text(text: str, width: int, scale: float) -> str:
    """``text`` shortened (with an ellipsis) to fit ``width`` pixels."""
    import cv2

    if cv2.getTextSize(text, _FONT, scale, 1)[0][0] <= width:
        return text
    lo, hi = 0, len(text)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if cv2.getTextSize(text[:mid] + "...", _FONT, scale, 1)[0][0] <= width:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo] + "..."


def _put_text(img: np.ndarray, text: str, org: tuple[int, int], scale: float = 0.4,
              color=(255, 255, 255)) -> None:
    """White (or ``color``) text on a darkened box, clipped to the image width."""
    import cv2

    x, y = org
    text = _fit_text(text, img.shape[1] - x - 2, scale)
    (tw, th), base = cv2.getTextSize(text, _FONT, scale, 1)
    y0, y1 = max(0, y - th - 2), min(img.shape[0], y + base)
    x0, x1 = max(0, x - 2), min(img.shape[1], x + tw + 2)
    img[y0:y1, x0:x1] = (img[y0:y1, x0:x1] * 0.35).astype(np.uint8)
    cv2.putText(img, text, (x, y), _FONT, scale, tuple(int(c) for c in color), 1, cv2.LINE_AA)


def _visible_runs(vis: np.ndarray, upto: int) -> list[tuple[int, int]]:
    """Maximal [a, b] frame ranges (b inclusive, b <= upto) where ``vis`` is true."""
    runs, start = [], None
    for t in range(upto + 1):
        if vis[t] and start is None:
            start = t
        if (not vis[t] or t == upto) and start is not None:
            runs.append((start, t if vis[t] else t - 1))
            start = None
    return runs


def _polyline(img: np.ndarray, pts: np.ndarray, color, thickness: int) -> None:
    import cv2

    if len(pts) >= 2:
        cv2.polylines(img, [_fix(pts).reshape(-1, 1, 2)], False, tuple(int(c) for c in color), thickness,
                      cv2.LINE_AA, _SHIFT)


def _dot(img: np.ndarray, p: np.ndarray, radius: float, color, thickness: int = -1) -> None:
    import cv2

    c = _fix(p)
    cv2.circle(img, (int(c[0]), int(c[1])), max(1, int(round(radius * _ONE))), tuple(int(v) for v in color),
               thickness, cv2.LINE_AA, _SHIFT)


def _track(img: np.ndarray, track: np.ndarray, vis: np.ndarray, upto: int, color, thickness: int) -> None:
    """Draw the visible parts of ``track`` (L, 2) up to frame ``upto``."""
    ok = vis & np.all(np.isfinite(track), axis=1)
    for a, b in _visible_runs(ok, upto):
        _polyline(img, track[a:b + 1], color, thickness)


class _TrackSet:
    """Many tracks drawn fast: fixed-point coordinates and visible runs computed once, one
    cv2.polylines call per colour."""

    def __init__(self, tracks: np.ndarray, visible: np.ndarray, n_colors: int = 16, color=None):
        ok = np.asarray(visible, bool) & np.all(np.isfinite(tracks), axis=2)
        self.fixed = _fix(np.where(ok[..., None], tracks, 0.0))
        self.ok = ok
        self.runs = [_visible_runs(ok[i], ok.shape[1] - 1) for i in range(len(tracks))]
        if color is not None:                     # one colour for every track
            n_colors = 1
        self.group = np.arange(len(tracks)) % n_colors
        self.colors = _palette(n_colors) if color is None else np.asarray([color], np.uint8)

    def color_of(self, i: int) -> np.ndarray:
        return self.colors[self.group[i]]

    def draw(self, img: np.ndarray, upto: int, thickness: int = 1, dot: float = 1.5) -> None:
        import cv2

        lines: dict[int, list[np.ndarray]] = {}
        for i, runs in enumerate(self.runs):
            for a, b in runs:
                if a >= upto:
                    break
                seg = self.fixed[i, a:min(b, upto) + 1]
                if len(seg) >= 2:
                    lines.setdefault(int(self.group[i]), []).append(seg.reshape(-1, 1, 2))
        for g, segs in lines.items():
            cv2.polylines(img, segs, False, tuple(int(c) for c in self.colors[g]), thickness, cv2.LINE_AA, _SHIFT)
        r = max(1, int(round(dot * _ONE)))
        for i in np.flatnonzero(self.ok[:, upto]):
            x, y = self.fixed[i, upto]
            cv2.circle(img, (int(x), int(y)), r, tuple(int(c) for c in self.colors[self.group[i]]), -1,
                       cv2.LINE_AA, _SHIFT)


# --------------------------------------------------------------------------- panels
class SampleView:
    """Everything needed to draw one sample's panels, at display scale."""

    def __init__(self, sample: dict[str, Any], scale: float = 1.0, seed: int = 0, max_n: int | None = None):
        import cv2

        from stages.decode import clip_rng
        from stages.trajectories import draw_trajectories

        self.sample = sample
        self.key = str(sample.get("key") or sample["meta"].get("clip_id"))
        frames = sample["frames"]
        self.L, H, W = frames.shape[:3]
        self.scale = float(scale)
        self.W, self.H = max(1, int(round(W * scale))), max(1, int(round(H * scale)))
        self.frames = (frames if (self.W, self.H) == (W, H) else
                       np.stack([cv2.resize(f, (self.W, self.H), interpolation=cv2.INTER_AREA) for f in frames]))
        self.meta = sample.get("meta") or {}
        # Positions scale about pixel centers: p' = (p + 0.5) * s - 0.5.
        self._to = lambda p: (np.asarray(p, np.float64) + 0.5) * self.scale - 0.5
        tracks = sample.get("anchor_tracks")
        self.anchor_tracks = None if tracks is None else self._to(tracks)
        self.anchor_visible = sample.get("anchor_visible")
        reliable = sample.get("anchor_reliable")
        self.verified = reliable is not None
        self.anchor_reliable = self.anchor_after = None
        if tracks is not None:
            vis = np.asarray(self.anchor_visible, bool)
            rel = vis if reliable is None else np.asarray(reliable, bool) & vis
            # the unreliable part, joined to the last reliable frame so the line is continuous
            after = vis & ~rel
            join = np.zeros_like(rel)
            join[:, :-1] = rel[:, :-1] & after[:, 1:]
            self.anchor_reliable, self.anchor_after = rel, after | join
        self.anchor_set = None if tracks is None else _TrackSet(self.anchor_tracks, self.anchor_reliable)
        self.unreliable_set = None if tracks is None else _TrackSet(self.anchor_tracks, self.anchor_after,
                                                                    color=UNRELIABLE_RGB)
        self._cache: dict[tuple[str, int], np.ndarray] = {}
        n_max = max_n or int((self.meta.get("anchors") or {}).get("max_trajectories") or 8)
        weights = sample.get("anchor_weights")
        if weights is not None and len(weights) and self.anchor_reliable is not None \
                and self.anchor_reliable.shape[1] > 1:
            cand = np.flatnonzero(self.anchor_reliable[:, 0] & self.anchor_reliable[:, 1])  # as the loader
            self.drawn = cand[draw_trajectories(np.asarray(weights)[cand], clip_rng(seed, self.key, "preview"),
                                                n_max)] if cand.size else np.zeros(0, np.int64)
        else:
            self.drawn = np.zeros(0, np.int64)
        self.draw_colors = _palette(max(len(self.drawn), 1), offset=0.02, sat=1.0)
        self.has_entities = sample.get("entity_tracks") is not None and sample.get("entity_ids") is not None
        if self.has_entities:
            self.entity_tracks = self._to(sample["entity_tracks"])
            self.entity_visibility = np.asarray(sample["entity_visibility"], bool)
            self.entity_radii = np.asarray(sample["entity_radii"], np.float64) * self.scale
            self.entity_ids = np.asarray(sample["entity_ids"])
            self.entity_colors = _palette(len(self.entity_ids), offset=0.5, sat=0.9)
        flow = sample.get("flow")
        self.flow = flow
        if flow is not None:
            mag = np.sqrt(flow[:, 0, ::2, ::2] ** 2 + flow[:, 1, ::2, ::2] ** 2)
            finite = mag[np.isfinite(mag)]
            self.flow_max = max(float(np.percentile(finite, 99)) if finite.size else 1.0, 1.0)
        self.legend = wheel_legend(max(24, min(self.W, self.H) // 5))

    # Each panel returns a new (H, W, 3) uint8 RGB image for frame t.
    def anchors(self, t: int) -> np.ndarray:
        img = self.frames[t].copy()
        if self.anchor_tracks is None:
            _put_text(img, "no anchors", (6, self.H // 2))
            return img
        self.unreliable_set.draw(img, t, thickness=1, dot=0.8)
        self.anchor_set.draw(img, t)
        visible = int(self.anchor_visible[:, t].sum())
        if self.verified:
            reliable = int(self.anchor_reliable[:, t].sum())
            _put_text(img, f"anchors {reliable} reliable / {visible} visible / {len(self.anchor_tracks)}  t={t}",
                      (4, 12))
        else:
            _put_text(img, f"anchors {visible}/{len(self.anchor_tracks)} visible (unverified)  t={t}", (4, 12))
        return img

    def draw(self, t: int) -> np.ndarray:
        img = self.frames[t].copy()
        if self.anchor_tracks is None:
            return img
        for j, k in enumerate(self.drawn):
            tr, vis = self.anchor_tracks[k], self.anchor_reliable[k]
            _track(img, tr, self.anchor_after[k], self.L - 1, UNRELIABLE_RGB, 1)   # never used by the trainer
            faint = (0.35 * self.draw_colors[j] + 0.65 * 255).astype(np.uint8)
            _track(img, tr, vis, self.L - 1, faint, 1)        # the whole track, faint
            _track(img, tr, vis, t, self.draw_colors[j], 3)     # the part up to t, bold
            if vis[t]:
                _dot(img, tr[t], 4, self.draw_colors[j])
                _dot(img, tr[t], 4, (0, 0, 0), 1)
            _dot(img, tr[0], 3, (255, 255, 255), 1)
        label = f"sampled draw: n={len(self.drawn)}"
        if self.verified and not len(self.drawn):
            label += " (no reliable anchor)"
        _put_text(img, label, (4, 12))
        return img

    def entities(self, t: int) -> np.ndarray:
        import cv2

        img = self.frames[t].copy()
        if not self.has_entities:
            img = (0.35 * img).astype(np.uint8)
            _put_text(img, "no entities in this sample", (6, self.H // 2))
            return img
        if t == 0 and self.sample.get("entity_mask") is not None:
            mask = np.asarray(self.sample["entity_mask"])
            if mask.shape[:2] != (self.H, self.W):
                mask = cv2.resize(mask, (self.W, self.H), interpolation=cv2.INTER_NEAREST)
            tint = np.zeros_like(img)
            for c, eid in zip(self.entity_colors, self.entity_ids):
                tint[mask == eid] = c
            has = mask > 0
            img[has] = (0.55 * img[has] + 0.45 * tint[has]).astype(np.uint8)
        for k in range(len(self.entity_ids)):
            tr, vis = self.entity_tracks[k], self.entity_visibility[k]
            _track(img, tr, vis, t, self.entity_colors[k], 2)
            if vis[t] and np.all(np.isfinite(tr[t])):
                _dot(img, tr[t], max(self.entity_radii[k], 1.0), self.entity_colors[k], 2)
                _dot(img, tr[t], 2.5, self.entity_colors[k])
        n_vis = int(self.entity_visibility[:, t].sum())
        _put_text(img, f"entities {n_vis}/{len(self.entity_ids)} visible", (4, 12))
        return img

    def flow_panel(self, t: int) -> np.ndarray:
        import cv2

        if self.flow is None or t >= len(self.flow):
            img = np.full((self.H, self.W, 3), 40, np.uint8)
            _put_text(img, "no flow" if self.flow is None else "last frame: no outgoing flow", (6, self.H // 2))
            return img
        f = self.flow[t]
        if f.shape[1:] != (self.H, self.W):   # colour the flow at display size (lengths unchanged)
            f = np.stack([cv2.resize(c, (self.W, self.H), interpolation=cv2.INTER_AREA) for c in f])
        img = flow_to_color(f, self.flow_max)
        s = self.legend.shape[0]
        img[self.H - s - 2:self.H - 2, self.W - s - 2:self.W - 2] = self.legend
        _put_text(img, f"flow {t}->{t + 1}, saturates at {self.flow_max:.1f}px", (4, 12))
        return img

    def panel(self, name: str, t: int) -> np.ndarray:
        """Panel ``name`` (one of PANELS) of frame t (cached: the sheet and the GIF share them)."""
        if (name, t) not in self._cache:
            self._cache[name, t] = self.flow_panel(t) if name == "flow" else getattr(self, name)(t)
        return self._cache[name, t]


def _summary_line(meta: dict) -> str:
    m = meta.get("motion") or {}
    if not m:
        return "no motion statistics"
    cam = m.get("camera") or {}
    ir = cam.get("inlier_ratio")
    tr = cam.get("translation") or [0, 0]
    parts = [f"|f| mean {m['magnitude']['mean']:.2f} p90 {m['magnitude']['p90']:.2f}px",
             f"moving {m.get('moving_fraction', 0):.0%}",
             f"camera ({tr[0]:+.2f},{tr[1]:+.2f})px/f zoom {cam.get('zoom', 1):.3f} "
             f"inliers {'n/a' if ir is None else f'{ir:.0%}'}",
             "CUT" if (m.get("cut") or {}).get("detected") else
             ("flow failure" if (m.get("cut") or {}).get("flow_failure") else "no cut")]
    track = (meta.get("anchors") or {}).get("trackability") or {}
    if track.get("reliable_through") is not None:
        parts.append(f"trackable {track['reliable_through']:.0%}")
    cov = (meta.get("anchors") or {}).get("coverage") or {}
    if cov.get("drawn_path_share") is not None:   # what the trainers' draw keeps of the motion
        parts.append(f"draw: weight {cov['drawable_share']:.0%} span {cov['mean_span']:.0%} "
                     f"path {cov['drawn_path_share']:.0%}")
    return " | ".join(parts)


def _header(width: int, key: str, caption: str, meta: dict) -> np.ndarray:
    img = np.full((_HEADER_H, width, 3), 24, np.uint8)
    _put_text(img, f"{key}: {caption}", (6, 17), 0.45)
    _put_text(img, _summary_line(meta), (6, 37), 0.4, (200, 230, 255))
    return img


def frame_columns(length: int, columns: int) -> list[int]:
    """``columns`` frame indices evenly spread over ``[0, length - 1]`` (all when fewer)."""
    if columns >= length:
        return list(range(length))
    return sorted({int(round(v)) for v in np.linspace(0, length - 1, columns)})


def contact_sheet(view: SampleView, columns: int = 4) -> np.ndarray:
    """(rows = PANELS) x (columns frames) grid under a header, RGB uint8."""
    ts = frame_columns(view.L, columns)
    gap = 2
    rows = []
    for name in PANELS:
        tiles = []
        for t in ts:
            tiles.append(view.panel(name, t))
            tiles.append(np.zeros((view.H, gap, 3), np.uint8))
        rows.append(np.concatenate(tiles[:-1], 1))
        rows.append(np.zeros((gap, rows[-1].shape[1], 3), np.uint8))
    grid = np.concatenate(rows[:-1], 0)
    header = _header(grid.shape[1], view.key, view.sample.get("caption") or "", view.meta)
    return np.concatenate([header, grid], 0)


def animation_frames(view: SampleView) -> list[np.ndarray]:
    """One 2 x 2 grid (anchors, draw / entities, flow) per frame, RGB uint8."""
    out = []
    gap = 2
    for t in range(view.L):
        a, b, c, d = (view.panel(n, t) for n in PANELS)
        vgap = np.zeros((view.H, gap, 3), np.uint8)
        top = np.concatenate([a, vgap, b], 1)
        bot = np.concatenate([c, vgap, d], 1)
        out.append(np.concatenate([top, np.zeros((gap, top.shape[1], 3), np.uint8), bot], 0))
    return out


def auto_scale(width: int, max_tile_width: int = 384) -> float:
    return min(1.0, max_tile_width / float(width))


def write_png(path: str, rgb: np.ndarray) -> str:
    import cv2

    if not cv2.imwrite(path, np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_PNG_COMPRESSION, 3]):
        raise OSError(f"cannot write {path}")
    return path


def write_gif(path: str, frames: list[np.ndarray], fps: float) -> str:
    from PIL import Image

    imgs = [Image.fromarray(np.ascontiguousarray(f)).quantize(colors=255, method=Image.Quantize.FASTOCTREE)
            for f in frames]
    imgs[0].save(path, save_all=True, append_images=imgs[1:], duration=int(round(1000.0 / max(fps, 0.1))),
                 loop=0, optimize=False, disposal=1)
    return path


def preview_sample(sample: dict, out_dir: str, columns: int = 4, scale: float | None = None,
                   seed: int = 0, gif: bool = True) -> dict[str, str]:
    """Write ``KEY.png`` (and ``KEY.gif``) for one decoded sample; returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    width = sample["frames"].shape[2]
    view = SampleView(sample, auto_scale(width) if scale is None else scale, seed=seed)
    paths = {"png": write_png(os.path.join(out_dir, f"{view.key}.png"), contact_sheet(view, columns))}
    if gif:
        fps = float((sample.get("meta") or {}).get("profile", {}).get("fps") or 4.0)
        paths["gif"] = write_gif(os.path.join(out_dir, f"{view.key}.gif"), animation_frames(view), fps)
    return paths


def preview(url: str | Iterable[str], out_dir: str, n: int = 8, columns: int = 4, scale: float | None = None,
            seed: int = 0, gif: bool = True) -> list[dict[str, str]]:
    """Previews of the first ``n`` samples at ``url`` (shard, brace pattern or output folder)."""
    out: list[dict[str, str]] = []
    for s in _samples(url):
        if len(out) >= n:
            break
        out.append(preview_sample(s, out_dir, columns=columns, scale=scale, seed=seed, gif=gif))
    return out


def _samples(url: str | Iterable[str]):
    """Decoded samples at ``url``, shard after shard (the shared tar reader, no webdataset)."""
    from schemas.sample import decode_sample

    from pipeline.shards import expand_urls, iter_samples

    for path in expand_urls(url):
        for key, members in iter_samples(path):
            yield decode_sample(members, key=key)
