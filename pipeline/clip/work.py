"""The unit of work: one clip, as it travels between operators.

``ClipWork`` keeps the clip's sample content (``sample``, a ``schemas.sample.Sample``: frames,
flow, anchors, entities, meta, as the steps of ``pipeline.steps`` fill it) apart from the run's
bookkeeping (manifest row, shard, timings, the ``stages.errors.Outcome``). The stages done are
kept once, in the sample's ``meta["stages_done"]`` (a stage cache resumes from them). Between two operators
that run in different processes (a CPU pool and a GPU pool) it travels as ``to_wire()``
bytes: the decoded arrays that the shard stores in encoded form are dropped and rebuilt on
the other side from exactly those encodings (frames from the stored JPEGs, flow from the
stored ``pfz1`` codec at the run's step), so every operator sees what the shard will hold
and an HD clip crosses the object store as about 2 MB instead of 30 MB.
"""
from __future__ import annotations

import dataclasses
import logging
import pickle
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from schemas.sample import Sample
from schemas.status import STATUS_OK
from stages.errors import INTERNAL, ClipStopped, Outcome

log = logging.getLogger(__name__)

# Sample fields rebuilt from their stored encodings on the receiving side (see ``to_wire``).
_WIRE_DROPPED = ("frames", "flow")
_BACKWARD = ("backward_flow", "backward_flow_backend")


@dataclass
class ClipWork:
    row: dict                                   # the manifest row (MANIFEST_SCHEMA)
    shard: int
    sample: Sample | None = None                # sample content so far (None before decode)
    members: dict[str, bytes] | None = None     # the encoded tar members, once encoded
    timings: dict[str, float] = field(default_factory=dict)
    resumed_from: str | None = None             # stage cache this clip was resumed from
    outcome: Outcome | None = None              # None while in progress
    t_start: float = field(default_factory=time.perf_counter)
    seconds: float = 0.0
    batches: dict[str, int] = field(default_factory=dict)  # operator -> size of the batch it ran in
    waits: dict[str, float] = field(default_factory=dict)  # operator -> its idle time before this batch, per clip
    entities: dict | None = None                # {mask_source, count} for the shard stats
    worker: str | None = None                   # host:pid of the process that started the clip

    @property
    def clip_id(self) -> str:
        return self.row["clip_id"]

    @property
    def index(self) -> int:
        return int(self.row["row"])

    @property
    def done(self) -> bool:
        return self.outcome is not None

    @property
    def status(self) -> str | None:
        return self.outcome.status if self.outcome else None

    @property
    def reason(self) -> str | None:
        return self.outcome.reason if self.outcome else None

    @property
    def message(self) -> str | None:
        return self.outcome.message if self.outcome else None

    @property
    def stages_done(self) -> list[str]:
        """The clip stages done on the sample so far (its ``meta["stages_done"]``)."""
        return list((self.sample.meta.get("stages_done") or []) if self.sample is not None else [])

    def mark_done(self, stage: str) -> None:
        done = self.stages_done
        if stage not in done:
            self.sample.meta["stages_done"] = done + [stage]

    def finish(self, outcome: Outcome) -> "ClipWork":
        self.outcome = outcome
        self.seconds = time.perf_counter() - self.t_start
        if outcome.status != STATUS_OK:
            self.sample = self.members = None
        return self

    def ok(self, members: dict[str, bytes], meta: dict | None = None) -> "ClipWork":
        self.members = members
        ent = (meta or {}).get("entities")
        if ent:
            self.entities = {"mask_source": ent.get("mask_source"), "count": int(ent.get("count", 0))}
        self.sample = None
        return self.finish(Outcome.ok())

    def fail(self, exc: BaseException) -> "ClipWork":
        """The clip ends with the outcome ``exc`` stands for; an unexpected exception (a bug, a
        library failure) is logged with its traceback and recorded as ``internal``."""
        if not isinstance(exc, ClipStopped):
            log.warning("clip %s failed (%s): %s", self.clip_id, INTERNAL, traceback.format_exc(limit=5))
        return self.finish(Outcome.of(exc))

    def absorb(self, other: "ClipWork") -> None:
        """Take the results of the same clip processed elsewhere (the isolation child)."""
        self.sample, self.members = other.sample, other.members
        self.add_timings(other.timings)
        if other.outcome is not None:
            self.finish(other.outcome)

    def add_timings(self, timings: dict[str, float] | None) -> None:
        for k, v in (timings or {}).items():
            self.timings[k] = round(self.timings.get(k, 0.0) + float(v), 4)

    # ---- crossing a process boundary
    def to_wire(self, keep_backward: bool = True) -> bytes:
        """``keep_backward``: carry ``sample.backward_flow`` (float32, 22 MB at HD) to the next
        operator; the runner drops it once no later step needs it."""
        s = self.sample
        if s is not None:
            drop = _WIRE_DROPPED + (() if keep_backward else _BACKWARD)
            s = dataclasses.replace(s, **{k: None for k in drop})
            if self.sample.flow is not None and s.flow_pfz is None:
                from schemas.sample import encode_flow

                step = float(s.meta["flow"]["step"])  # the stored precision: lossless here
                s.flow_pfz = encode_flow(self.sample.flow, step)
        obj = {**self.__dict__, "sample": s, "t_start": None, "_elapsed": time.perf_counter() - self.t_start}
        return pickle.dumps(obj, protocol=5)

    @classmethod
    def from_wire(cls, data: bytes) -> "ClipWork":
        obj = pickle.loads(data)
        elapsed = obj.pop("_elapsed")
        obj["t_start"] = time.perf_counter() - elapsed  # clip time keeps counting across operators
        work = cls(**obj)
        s = work.sample
        if s is not None:
            from schemas.sample import decode_flow, decode_jpeg

            if s.frames_jpeg:
                s.frames = np.stack([decode_jpeg(j) for j in s.frames_jpeg])
            if s.flow_pfz is not None:  # kept: the flow does not change after its step, so a
                s.flow = decode_flow(s.flow_pfz)  # later crossing sends these bytes again without encoding
        return work

    def status_row(self, tar: str | None = None) -> dict[str, Any]:
        return {"clip_id": self.clip_id, "row": self.index, "shard": int(self.shard), "status": self.status,
                "reason": self.reason, "message": self.message, "tar": tar,
                "bytes": sum(map(len, self.members.values())) if self.members else None,
                "seconds": round(self.seconds, 4)}
