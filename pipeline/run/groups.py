"""Stage groups: the run's steps cut into runs of equal resource needs, one operator each.

The steps (``pipeline.steps``, in order) declare their ``Resources``: ``cpu``, or ``torch``
with the operator they share on a GPU cluster (``flow``, ``masks``, ``tracks``, ``captions``,
or a plugin's), derived from the ``device_kind`` their backend declares. Consecutive steps with
equal resources form one group; a ``light`` step (motion statistics, a few ms of CPU) joins the
group before it. Each group is one operator: a Ray Data actor pool with its own
``num_cpus``/``num_gpus`` and batch size.

When the cluster has no GPU, or ``ray.gpu_operators`` is false, everything is one fused CPU
group: one operator runs a clip from decode to its staged part, in the clip-isolation child,
and its frames never cross the object store (the default on a CPU machine).

Per-group settings come from ``ray.groups.<name>`` (``cpu`` for the CPU groups, an operator's
name for a model group): ``num_cpus``, ``num_gpus``, ``batch_size`` (clips per call),
``min_actors``, ``max_actors``. Defaults: model groups share each GPU (``num_gpus`` = 1 / number
of model groups), ``batch_size`` as the step declares, from 1 to as many actors as the
cluster's GPUs allow; CPU groups hold ``ray.num_cpus_per_worker`` each, as many as the CPUs
left allow.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from pipeline.steps import Resources, steps_for

__all__ = ["GROUP_KEYS", "StageGroup", "plan_groups", "describe"]

GROUP_KEYS = ("num_cpus", "num_gpus", "batch_size", "min_actors", "max_actors")


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


def _runs(cfg, target: str, split: bool) -> list[tuple[Resources, list[str]]]:
    runs: list[tuple[Resources, list[str]]] = []
    for step in steps_for(cfg, target):
        res = step.resources(cfg) if split else Resources()
        if runs and (step.light or runs[-1][0] == res):
            runs[-1][1].append(step.name)
        else:
            runs.append((res, [step.name]))
    if not runs or runs[-1][0].gpu:
        runs.append((Resources(), []))  # encoding and staging are CPU work: a CPU group ends the plan
    return runs


def plan_groups(cfg, target: str = "shards", cluster_cpus: float = 1.0, cluster_gpus: float = 0.0) -> list[StageGroup]:
    """The operators of a run (see the module docstring)."""
    r = cfg.ray
    overrides = dict(r.groups or {})
    split = cluster_gpus > 0 and r.gpu_operators is not False
    runs = _runs(cfg, target, split)
    n_model = sum(1 for res, _ in runs if res.gpu)
    cpu_per = float(r.num_cpus_per_worker or 1.0)
    # the CPUs the model actors hold are not there for the CPU pools
    gpu_cpus = sum(float(overrides.get(res.operator, {}).get("num_cpus", min(1.0, cpu_per))) for res, _ in runs if res.gpu)
    cpu_budget = max(1, int((cluster_cpus - gpu_cpus) // cpu_per)) if split else None
    groups: list[StageGroup] = []
    seen: dict[str, int] = {}
    for i, (res, names) in enumerate(runs):
        name = res.operator if res.gpu else "cpu"
        o = dict(overrides.get(name, {}))
        if res.gpu:
            num_gpus = float(o.get("num_gpus", 1.0 / n_model))
            max_default = max(1, int(math.floor(cluster_gpus / num_gpus + 1e-9))) if num_gpus > 0 else 1
            num_cpus = float(o.get("num_cpus", min(1.0, cpu_per)))
        else:
            num_gpus = float(o.get("num_gpus", 0.0 if split else (r.num_gpus_per_worker or 0.0)))
            num_cpus = float(o.get("num_cpus", cpu_per))
            max_default = cpu_budget if cpu_budget is not None else (
                r.num_workers or max(1, int(cluster_cpus // max(cpu_per, 0.01))))
        max_actors = int(o.get("max_actors") or (r.num_workers if (not res.gpu and r.num_workers) else max_default))
        min_actors = int(o.get("min_actors", max_actors if not split else 1))
        # a second group of the same name (cpu2, ...) gets a distinct name in the stats; the
        # overrides of its base name apply to all of them
        seen[name] = seen.get(name, 0) + 1
        groups.append(StageGroup(
            name=name if seen[name] == 1 else f"{name}{seen[name]}", steps=tuple(names), gpu=res.gpu,
            num_cpus=num_cpus, num_gpus=num_gpus, batch_size=int(o.get("batch_size", res.batch_size)),
            min_actors=max(1, min(min_actors, max_actors)), max_actors=max(1, max_actors),
            first=(i == 0), last=(i == len(runs) - 1)))
    return groups


def describe(groups: list[StageGroup]) -> list[dict]:
    """The plan as the run summary and the result record it."""
    return [{"name": g.name, "steps": list(g.steps), "num_cpus": g.num_cpus, "num_gpus": g.num_gpus,
             "batch_size": g.batch_size, "actors": [g.min_actors, g.max_actors]} for g in groups]

