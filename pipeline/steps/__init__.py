"""The clip's steps: one module each, and the one ordered list of them.

``STEPS`` (a ``stages.registry.Registry``, lazy ``"module:attr"`` entries) is the step list, in
the order a clip goes through it::

    decode -> captions -> flow -> motion -> anchors -> entity_masks -> entity_tracks

Adding a step is one module (a ``pipeline.steps.base.Step`` subclass) plus one line here; a
plugin (config ``plugins``) adds one with ``register_step(name, "module:Class", after="motion")``.
Everything else asks the steps: the clip stages (``clip_stages``: what ``--stage`` and
``meta.stages_done`` name), which steps a run performs (``steps_for``), the planner's
operators (``pipeline.run.groups``), preflight (``setup``, ``devices``), the fingerprint
(``enabled``) and the one loop (``pipeline.clip.loop``).
"""
from __future__ import annotations

from stages.registry import Registry

from pipeline.steps.base import CPU, TORCH, Backends, Resources, SetupError, Step, setup_failure

__all__ = ["STEPS", "register_step", "step_classes", "clip_stages", "run_stages", "stage_of", "steps_for",
           "operator_names", "Step", "Resources", "Backends", "SetupError", "setup_failure", "CPU", "TORCH"]

STEPS = Registry("clip step", {
    "decode": "pipeline.steps.decode:DecodeStep",
    "captions": "pipeline.steps.captions:CaptionsStep",
    "flow": "pipeline.steps.flow:FlowStep",
    "motion": "pipeline.steps.motion:MotionStep",
    "anchors": "pipeline.steps.anchors:AnchorsStep",
    "entity_masks": "pipeline.steps.entity_masks:EntityMasksStep",
    "entity_tracks": "pipeline.steps.entity_tracks:EntityTracksStep",
})


def register_step(name: str, step: type[Step] | str, after: str | None = None) -> None:
    """Add a step (a ``Step`` subclass or ``"module:Class"``) after ``after`` (else last)."""
    STEPS.register(name, step, after=after)


def step_classes() -> list[type[Step]]:
    """Every registered step, in order."""
    return [STEPS.get(name) for name in STEPS.choices()]


def clip_stages() -> tuple[str, ...]:
    """The clip stages, in order: the stages the steps complete."""
    return tuple(s.stage for s in step_classes() if s.stage)


def run_stages() -> tuple[str, ...]:
    """What ``--stage`` takes: a clip stage, or ``shards`` (every step and the shard writer)."""
    return clip_stages() + ("shards",)


def stage_of(step: type[Step]) -> str:
    """The clip stage a step belongs to: its own, or that of the next step that completes one
    (``entity_masks`` -> ``entities``). Its seconds are counted there; it is done when that
    stage is done."""
    classes = step_classes()
    for s in classes[classes.index(step):]:
        if s.stage:
            return s.stage
    raise ValueError(f"step {step.name!r} is followed by no step that completes a clip stage")


def steps_for(cfg, target: str = "shards") -> list[type[Step]]:
    """The enabled steps a run up to ``target`` (a clip stage, or ``shards``) performs."""
    stages = clip_stages()
    if target not in stages and target != "shards":
        raise ValueError(f"unknown stage {target!r}; stages: {', '.join(run_stages())}")
    last = len(stages) if target == "shards" else stages.index(target) + 1
    return [s for s in step_classes() if stages.index(stage_of(s)) < last and s.enabled(cfg)]


def operator_names() -> tuple[str, ...]:
    """The names of the run's operators (``ray.groups.<name>``): ``cpu`` and the steps' own."""
    return ("cpu", *dict.fromkeys(s.operator for s in step_classes() if s.operator))
