"""Flow: the dense forward flow of the clip (``stages.flow``), rounded to the precision the shard
stores, so every later step sees exactly the stored flow.

Also the one home of the flow backends a process shares: ``main_flow`` (the configured backend,
built once) and ``backward_backend`` / ``backward_flow`` (the backward flow of the
forward-backward checks: anchors' reliability, motion masks, the flow tracker), and the device
kinds the planner places steps by (``flow_kind``, ``backward_kind``).
"""
from __future__ import annotations

import numpy as np

from schemas.sample import FlowEncoder, Sample, dequantize_flow
from stages.flow.backward import backward_device_kind, make_backward_backend
from stages.flow.base import FLOW_BACKENDS, FlowBackend, make_flow_backend_from

from pipeline.steps.base import CPU, Backends, Resources, Step, setting_up, short

ENCODING = "pfz1"


def flow_kind(cfg) -> str:
    """``cpu`` or ``torch``: what the configured flow backend declares."""
    return FLOW_BACKENDS.device_kind(cfg.flow.backend)


def backward_kind(cfg) -> str:
    """What the backward flow of the checks runs on (``entities.backward_flow``)."""
    return backward_device_kind(cfg.entities.backward_flow, flow_kind(cfg))


def describe(backend: FlowBackend) -> str:
    """A backend in a few words: ``dis medium``, ``raft small on cuda``."""
    return short(backend.describe(), "backend", "preset", "model")


def main_flow(cfg, backends: Backends) -> FlowBackend:
    """The run's flow backend (``flow`` settings), built once per process."""
    over = {"device": backends.device} if backends.device else {}
    return backends.get("flow", lambda: make_flow_backend_from(cfg.flow, **over))


def backward_backend(cfg, backends: Backends) -> FlowBackend:
    """The backend of the backward flow (``stages.flow.backward``), built once per process;
    the main backend is built for it only when the rule takes it."""
    choice = cfg.entities.backward_flow

    def make() -> FlowBackend:
        uses_main = choice == "same" or backward_kind(cfg) != CPU
        return make_backward_backend(choice, main_flow(cfg, backends) if uses_main else None)

    return backends.get("backward", make)


def backward_flow(sample: Sample, backend: FlowBackend) -> tuple[np.ndarray, dict]:
    """The clip's backward flow and its backend's describe(): the one on the sample when it came
    from the same backend (the anchors step makes it first), else computed and kept there."""
    desc = backend.describe()
    if sample.backward_flow is None or sample.backward_flow_backend != desc:
        sample.backward_flow, sample.backward_flow_backend = backend.backward(sample.frames), desc
    return sample.backward_flow, desc


def setup_backward(cfg, backends: Backends) -> dict[str, str]:
    with setting_up("the backward flow of the forward-backward checks", "check entities.backward_flow"):
        back = backward_backend(cfg, backends)
    return {"backward_flow": describe(back)}


class FlowStep(Step):
    name = "flow"
    stage = "flow"
    operator = "flow"
    batched = True

    def __init__(self, cfg, backends):
        super().__init__(cfg, backends)
        self.step = float(cfg.flow.step)   # quantisation step of the stored flow (px)

    @classmethod
    def resources(cls, cfg) -> Resources:
        kind = flow_kind(cfg)
        return Resources() if kind == CPU else Resources(kind, cls.operator, 4)

    @classmethod
    def devices(cls, cfg) -> dict[str, str]:
        return {} if flow_kind(cfg) == CPU else {"flow.device": cfg.flow.device}

    def setup(self) -> dict[str, str]:
        f = self.cfg.flow
        if flow_kind(self.cfg) != CPU:
            fix = ("set flow.checkpoint (and flow.source for unimatch) to local files in the --config file, "
                   "or choose a CPU backend (--flow dis)")
        else:
            fix = "check flow.backend and its settings (--flow, --flow-preset)"
        with setting_up(f"the flow backend {f.backend!r}", fix):
            backend = main_flow(self.cfg, self.backends)
        return {"flow": describe(backend)}

    @property
    def backend(self) -> FlowBackend:
        return main_flow(self.cfg, self.backends)

    def run(self, samples: list[Sample], rows: list[dict]) -> list[Sample]:
        """Forward flow of each clip, pair by pair: each pair is rounded to the stored precision
        into the clip's flow array and encoded into its ``pfz1`` member as it comes
        (``schemas.codecs.FlowEncoder``), so no second float32 copy of the clip's flow exists
        (docs/performance.md, "Profiles: memory per worker"). The frame pairs of several clips
        go through one batched call where the backend can (``forward_many``: the torch
        backends) and the clips share one frame size."""
        backend = self.backend
        many = getattr(backend, "forward_many", None)
        if many is not None and len(samples) > 1 and len({s.frames.shape for s in samples}) == 1:
            for sample, flow in zip(samples, many([s.frames for s in samples])):
                self._store(sample, flow, iter(flow))
        else:
            for sample in samples:
                n, h, w = sample.frames.shape[:3]
                self._store(sample, np.empty((n - 1, 2, h, w), np.float32), backend.forward_pairs(sample.frames))
        desc = backend.describe()
        for sample in samples:
            sample.meta["flow"] = {**desc, "step": self.step, "encoding": ENCODING, "max_encoding_error": self.step / 2}
        return samples

    def _store(self, sample: Sample, out: np.ndarray, pairs) -> None:
        """``out[t]`` = pair t at the stored precision (exactly what the shard stores), and the
        clip's ``pfz1`` bytes."""
        enc = FlowEncoder(*out.shape, step=self.step)
        t = -1
        for t, pair in enumerate(pairs):
            out[t] = dequantize_flow(pair, self.step)
            enc.add(t, out[t])
        if t != len(out) - 1:
            raise RuntimeError(f"the flow backend gave {t + 1} pairs for {len(out) + 1} frames")
        sample.flow, sample.flow_pfz = out, enc.finish()
