"""Video decoder backends behind one interface (``base.FrameDecoder``), and their registry.

``DECODERS`` (a ``stages.registry.Registry``) names them, each imported only when chosen:

| name | package (install extra) | devices | scales frames with |
| --- | --- | --- | --- |
| ``decord`` | decord 0.6.0 (``decord``; in the base install on x86_64 Linux) | cpu | swscale bilinear, YUV planes |
| ``pyav`` | PyAV 18.1.0 (base dependency, ``av``) | cpu | swscale bilinear, YUV planes |
| ``torchcodec`` | torchcodec 0.17.0 (``torchcodec``) + the system's FFmpeg libraries | cpu, cuda | bilinear on RGB |

``auto`` is decord where it imports, else pyav (``resolve_decoder``). Every backend decodes
rows of one frame table (``base.read_frame_table``, PyAV's packet scan), and
``stages.decode.decode_video`` chooses the rows, so the source frame indices of a clip are
the same with every backend; only pixels may differ (measured in docs/performance.md).

``make_decoder(name, device, threads)`` builds one: an ImportError says which package is
missing and the install command; a ValueError a device the backend cannot use. A plugin
adds a backend with ``DECODERS.register(name, factory)`` (a ``FrameDecoder`` subclass or a
factory taking ``device`` and ``threads``).
"""
from __future__ import annotations

# OpenCV first: with decord and PyAV loaded before it, their bundled zlib takes the place of
# the one OpenCV's libpng was built against, and every PNG read or write in the process fails
# ("libpng error: bad parameters to zlib"; measured with decord 0.6.0, PyAV 18.1.0, OpenCV 5.0).
import cv2  # noqa: F401,E402

from ..registry import Registry
from .base import FrameDecoder, FrameTable, read_frame_table

__all__ = ["DECODERS", "AUTO", "FrameDecoder", "FrameTable", "read_frame_table", "decoder_choices",
           "resolve_decoder", "decoder_identity", "make_decoder", "installed_decoders",
           "check_decoder", "auto_reason"]

AUTO = "auto"
DECODERS = Registry("decoder", {
    "decord": "stages.decoders.decord_backend:DecordDecoder",
    "pyav": "stages.decoders.pyav_backend:PyAVDecoder",
    "torchcodec": "stages.decoders.torchcodec_backend:TorchCodecDecoder",
})
# auto: the first of these that imports
AUTO_ORDER = ("decord", "pyav")


def decoder_choices() -> tuple[str, ...]:
    """``auto`` and the registered names (the choices of the ``decode.backend`` setting)."""
    return (AUTO, *DECODERS.choices())


def _imports(module: str) -> str | None:
    """None when ``module`` imports, else why not (one line)."""
    import importlib

    try:
        importlib.import_module(module)
    except Exception as e:  # noqa: BLE001 - ImportError, or a broken shared library (OSError)
        return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:200]
    return None


def resolve_decoder(name: str = AUTO) -> str:
    """The concrete backend ``name`` stands for: itself, or for ``auto`` decord if it
    imports, else pyav. An unknown name raises ``ValueError`` with the choices."""
    key = DECODERS.key(name or AUTO)
    if key != AUTO:
        if key not in DECODERS:
            raise ValueError(f"unknown decoder {name!r}; known: {', '.join(decoder_choices())}")
        return key
    for candidate in AUTO_ORDER:
        if _imports(candidate if candidate != "pyav" else "av") is None:
            return candidate
    return AUTO_ORDER[-1]  # its own ImportError says what to install


def auto_reason() -> str:
    """Why ``auto`` did not pick decord ("" when it did): for the setup line."""
    why = _imports("decord")
    return f"decord does not import ({why})" if why else ""


def decoder_identity(name: str = AUTO, device: str | None = "cpu") -> str:
    """What decides the pixels of a run: the resolved backend, plus ``/cuda`` for a
    CUDA device (the fingerprint and the sample meta carry it)."""
    backend = resolve_decoder(name)
    d = str(device or "cpu").lower()
    if backend == "torchcodec" and d == "auto":
        from ..devices import resolve_device

        d = resolve_device("auto").type
    return f"{backend}/cuda" if d.startswith("cuda") else backend


def make_decoder(name: str = AUTO, device: str | None = "cpu", threads: int = 1) -> FrameDecoder:
    """Build the backend ``name`` (``auto`` resolved): see the module docstring."""
    return DECODERS.create(resolve_decoder(name), device=device or "cpu", threads=threads)


def installed_decoders() -> list[str]:
    """The registered backends that build here (tests parametrize over them)."""
    out = []
    for name in DECODERS:
        try:
            make_decoder(name)
        except (ImportError, ValueError):
            continue
        out.append(name)
    return out


def check_decoder(decoder: FrameDecoder) -> None:
    """Decode every frame of a 4-frame H.264 clip written here (PyAV) with ``decoder``, so a
    broken installation (a library that fails at the first frame, a device that cannot
    decode) shows before the first clip; raises what the backend raises."""
    import os
    import tempfile

    import av
    import numpy as np

    w, h = 128, 96
    ramp = np.linspace(0, 255, w, dtype=np.uint8)[None, :, None]
    with tempfile.TemporaryDirectory(prefix="decoder-check-") as folder:
        path = os.path.join(folder, "check.mp4")
        with av.open(path, "w") as c:
            s = c.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=4)
            s.width, s.height, s.pix_fmt = w, h, "yuv420p"
            for i in range(4):
                img = np.broadcast_to(ramp, (h, w, 3)).copy()
                img[:, 8 + 16 * i:24 + 16 * i] = 255
                for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                    c.mux(p)
            for p in s.encode():
                c.mux(p)
        table = read_frame_table(path)
        frames = decoder.read(path, table, np.arange(table.num_frames), (w // 2, h // 2))
    if frames.shape != (4, h // 2, w // 2, 3) or frames.dtype != np.uint8:
        raise RuntimeError(f"decoder {decoder.name!r} returned {frames.shape} {frames.dtype} for 4 frames "
                           f"of {w // 2}x{h // 2}")
