"""Stage groups: the clip's steps cut into runs of equal resource needs.

Steps, in order: ``decode, captions, flow, motion, trajectories, entity_masks,
entity_tracks`` and then ``encode`` (tar members + the staged part). A step needs a GPU when
its configured backend is a GPU model: ``captions`` with a BLIP-2 folder, ``flow`` with
raft/unimatch (and then ``motion`` and ``trajectories`` too: the anchors' reliability needs
the flow model's backward flow), ``entity_masks`` with SAM (``sam``, or ``auto`` with a SAM
checkpoint), ``entity_tracks`` with CoTracker. Consecutive steps of the same kind form one group, and each group is one
operator (a Ray Data actor pool with its own ``num_cpus``/``num_gpus`` and batch size).

When the cluster has no GPU, or ``ray.gpu_operators`` is false, everything is one fused CPU
group: one operator runs a clip from decode to its staged part, in the clip-isolation
child, and its frames never cross the object store (the default on a CPU machine).

Per-group settings come from ``ray.groups.<name>`` (names: ``cpu`` for the CPU groups,
``captions``, ``flow``, ``masks``, ``tracks`` for the model groups): ``num_cpus``, ``num_gpus``,
``batch_size`` (clips per call), ``min_actors``, ``max_actors``. Defaults: model groups
share each GPU (``num_gpus`` = 1 / number of model groups), ``batch_size`` 4 (flow, tracks)
or 8 (masks), from 1 to as many actors as the cluster's GPUs allow; CPU groups hold
``ray.num_cpus_per_worker`` each, as many as the CPUs left allow.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from schemas.status import CLIP_STAGES

STEPS = ("decode", "captions", "flow", "motion", "trajectories", "entity_masks", "entity_tracks")
STEP_STAGE = {"decode": "decode", "captions": "captions", "flow": "flow", "motion": "motion", "trajectories": "trajectories",
              "entity_masks": "entities", "entity_tracks": "entities"}
GPU_FLOW_BACKENDS = ("raft", "unimatch")
GROUP_KEYS = ("num_cpus", "num_gpus", "batch_size", "min_actors", "max_actors")
GROUP_NAMES = ("cpu", "flow", "masks", "tracks", "captions")
MODEL_GROUP = {"captions": "captions", "flow": "flow", "motion": "flow", "trajectories": "flow", "entity_masks": "masks",
               "entity_tracks": "tracks"}
DEFAULT_BATCH = {"captions": 8, "flow": 4, "masks": 8, "tracks": 4, "cpu": 1}


@dataclass(frozen=True)
class StageGroup:
    name: str
    steps: tuple[str, ...]
    gpu: bool
    num_cpus: float
    num_gpus: float
    batch_size: int
    min_actors: int
    max_actors: int
    first: bool = False
    last: bool = False

    @property
    def fused(self) -> bool:
        """From the manifest row to the staged part in one operator."""
        return self.first and self.last

    @property
    def until(self) -> str | None:
        """The last whole clip stage (``CLIP_STAGES``) this group completes."""
        whole = [STEP_STAGE[s] for s in self.steps
                 if s != "entity_masks" or "entity_tracks" in self.steps]
        return whole[-1] if whole else None


def steps_for(target: str) -> tuple[str, ...]:
    """The steps a run up to ``target`` (a clip stage, or "shards") performs."""
    if target == "shards":
        return STEPS
    last = CLIP_STAGES.index(target)
    return tuple(s for s in STEPS if CLIP_STAGES.index(STEP_STAGE[s]) <= last)


def _entities_on(cfg) -> bool:
    e = cfg.entities
    return bool(e.enabled) and str(e.masks).lower() != "none"


def _gpu_backward(cfg) -> bool:
    """The backward flow (anchor reliability, entity checks) comes from the GPU flow model."""
    back = str(cfg.entities.backward_flow or "auto").lower()
    return str(cfg.flow.backend).lower() in GPU_FLOW_BACKENDS and back in ("auto", "same")


def step_needs_gpu(cfg, step: str) -> bool:
    gpu_flow = str(cfg.flow.backend).lower() in GPU_FLOW_BACKENDS
    if step == "captions":  # BLIP-2 when a model folder is given and the rule can use it
        c = cfg.captions
        return bool(c.model) and str(c.source).lower() in ("auto", "blip2")
    if step == "flow":
        return gpu_flow
    reliability = bool(getattr(cfg.trajectories, "reliability", True))
    if step in ("motion", "trajectories"):
        # the anchors' reliability needs the backward flow of the flow model: the flow
        # operator computes it (motion, a few ms of CPU, rides along so the order stays)
        return reliability and _gpu_backward(cfg)
    if not _entities_on(cfg):
        return False
    e = cfg.entities
    if step == "entity_masks":
        masks = str(e.masks).lower()
        return masks == "sam" or (masks == "auto" and bool(e.sam_checkpoint))
    if step == "entity_tracks":  # the backward flow is in the clip state already when reliability is on
        return str(e.tracker).lower() == "cotracker" or (not reliability and _gpu_backward(cfg))
    return False


def plan_groups(cfg, target: str = "shards", cluster_cpus: float = 1.0, cluster_gpus: float = 0.0) -> list[StageGroup]:
    """The operators of a run (see the module docstring)."""
    steps = steps_for(target)
    r = cfg.ray
    overrides = dict(getattr(r, "groups", None) or {})
    split = cluster_gpus > 0 and getattr(r, "gpu_operators", None) is not False
    kinds = [step_needs_gpu(cfg, s) if split else False for s in steps]
    runs: list[tuple[bool, list[str]]] = []
    for s, g in zip(steps, kinds):
        # a model group holds one model: flow, masks and tracks are separate operators
        if runs and runs[-1][0] == g and (not g or MODEL_GROUP[runs[-1][1][-1]] == MODEL_GROUP[s]):
            runs[-1][1].append(s)
        else:
            runs.append((g, [s]))
    if runs[-1][0]:
        runs.append((False, []))  # encoding and staging are CPU work: a CPU group ends the plan
    n_model = sum(1 for g, _ in runs if g)
    cpu_per = float(r.num_cpus_per_worker or 1.0)
    groups: list[StageGroup] = []
    # the CPUs the model actors hold are not there for the CPU pools
    gpu_cpus = sum(float(overrides.get(MODEL_GROUP[ss[0]], {}).get("num_cpus", min(1.0, cpu_per)))
                   for g, ss in runs if g)
    cpu_budget = max(1, int((cluster_cpus - gpu_cpus) // cpu_per)) if split else None
    for i, (g, ss) in enumerate(runs):
        name = MODEL_GROUP[ss[0]] if g else "cpu"
        o = dict(overrides.get(name, {}))
        if g:
            num_gpus = float(o.get("num_gpus", 1.0 / n_model))
            max_default = max(1, int(math.floor(cluster_gpus / num_gpus + 1e-9))) if num_gpus > 0 else 1
            num_cpus = float(o.get("num_cpus", min(1.0, cpu_per)))
        else:
            num_gpus = float(o.get("num_gpus", 0.0 if split else (r.num_gpus_per_worker or 0.0)))
            num_cpus = float(o.get("num_cpus", cpu_per))
            if cpu_budget is not None:
                max_default = cpu_budget
            else:
                max_default = r.num_workers or max(1, int(cluster_cpus // max(cpu_per, 0.01)))
        max_actors = int(o.get("max_actors") or (r.num_workers if (not g and r.num_workers) else max_default))
        min_actors = int(o.get("min_actors", max_actors if not split else 1))
        groups.append(StageGroup(
            name=name, steps=tuple(ss), gpu=g, num_cpus=num_cpus, num_gpus=num_gpus,
            batch_size=int(o.get("batch_size", DEFAULT_BATCH[name])), min_actors=max(1, min(min_actors, max_actors)),
            max_actors=max(1, max_actors), first=(i == 0), last=(i == len(runs) - 1)))
    # CPU groups after the first get distinct names (cpu, cpu2, ...) in the stats; the
    # overrides of ray.groups.cpu apply to all of them
    seen: dict[str, int] = {}
    out = []
    for grp in groups:
        k = seen.get(grp.name, 0) + 1
        seen[grp.name] = k
        out.append(grp if k == 1 else StageGroup(**{**grp.__dict__, "name": f"{grp.name}{k}"}))
    return out
