"""``torchcodec``: torchcodec 0.17 (for torch >= 2.11; wheels for Linux x86_64 and aarch64,
macOS arm64), on the CPU or on a CUDA device (NVDEC). It loads the FFmpeg libraries of the
system (4 to 9: e.g. Debian's libavcodec59 ... packages, or conda's ffmpeg).

The table is handed to torchcodec as its frame mappings (pts, duration, key frame per
frame), so it neither scans the file again nor guesses: its frame ``i`` is table row ``i``,
and the pts it returns are checked against the table. On the CPU frames are scaled in the
decoder (torchcodec's ``Resize``: bilinear, on RGB after conversion, where decord and pyav
scale the YUV planes while converting: 41-45 dB PSNR between the two, docs/performance.md);
on CUDA they are decoded at the source size and scaled on the device with
``torch.nn.functional.interpolate`` (bilinear, antialiased), then copied to host memory.
"""
from __future__ import annotations

import json
import os

import numpy as np

from ..errors import ClipError
from .base import FrameDecoder, FrameTable, first_line, missing_package, unique_rows


class TorchCodecDecoder(FrameDecoder):
    name = "torchcodec"

    def __init__(self, device: str = "cpu", threads: int = 1):
        try:
            import torch
            import torchcodec  # noqa: F401 (loads the FFmpeg libraries: fails here when they are missing)
            from torchcodec.decoders import VideoDecoder
        except Exception as e:  # noqa: BLE001 - ImportError, or a RuntimeError naming the missing libraries
            raise missing_package("torchcodec", "torchcodec", "torchcodec", e) from e
        d = str(device or "cpu").lower()
        if d == "auto":
            d = "cuda" if torch.cuda.is_available() else "cpu"
        if d.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"decoder 'torchcodec' on {d!r} requested but CUDA is not available "
                             f"(set decode.device to cpu)")
        if not (d == "cpu" or d.startswith("cuda")):
            raise ValueError(f"decoder 'torchcodec' decodes on cpu or cuda, not {d!r}")
        self._torch, self._tc, self._VideoDecoder = torch, torchcodec, VideoDecoder
        self.device = d
        self.device_kind = "torch" if d.startswith("cuda") else "cpu"
        self.threads = int(threads)

    def version(self) -> str:
        return str(getattr(self._tc, "__version__", ""))

    @staticmethod
    def frame_mappings(table: FrameTable) -> str:
        """The table as torchcodec's ``custom_frame_mappings`` JSON."""
        return json.dumps({"frames": [{"pts": int(p), "duration": int(d), "key_frame": int(k)}
                                      for p, d, k in zip(table.pts, table.duration, table.keyframe)]})

    def read(self, path: str, table: FrameTable, indices: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        torch = self._torch
        rows, inverse = unique_rows(indices)
        if table.pts is None:
            raise ClipError("decode_error", "the packets carry no timestamps: torchcodec cannot map its frames")
        on_cpu = self.device == "cpu"
        opts = {}
        if on_cpu and size != (table.width, table.height):
            from torchcodec.transforms import Resize

            opts["transforms"] = [Resize((size[1], size[0]))]
        try:
            dec = self._VideoDecoder(path, stream_index=table.stream_index, dimension_order="NCHW",
                                     num_ffmpeg_threads=self.threads, device=self.device,
                                     custom_frame_mappings=self.frame_mappings(table), **opts)
        except Exception as e:  # noqa: BLE001 - torchcodec raises RuntimeError / ValueError
            raise ClipError("unreadable", f"torchcodec cannot open {os.path.basename(path)}: {first_line(e)}") from None
        try:
            batch = dec.get_frames_at([int(r) for r in rows])
        except Exception as e:  # noqa: BLE001
            raise ClipError("decode_error", f"frames {rows.min()}..{rows.max()} do not decode: {first_line(e)}") from None
        got = np.rint(batch.pts_seconds.double().cpu().numpy() / float(table.time_base)).astype(np.int64)
        if not np.array_equal(got, table.pts[rows]):
            k = int(np.argmax(got != table.pts[rows]))
            raise ClipError("decode_error", f"torchcodec returned pts {got[k]} for frame {rows[k]} "
                                            f"(pts {table.pts[rows[k]]})")
        data = batch.data
        if data.shape[-2:] != (size[1], size[0]):
            data = torch.nn.functional.interpolate(data.float(), size=(size[1], size[0]), mode="bilinear", antialias=True,
                                                   align_corners=False).round_().clamp_(0, 255).to(torch.uint8)
        return data.permute(0, 2, 3, 1).contiguous().cpu().numpy()[inverse]
