"""Anchor tracking for DragNUWA's trajectories (docs/trajectories.md, issue 23).

Modules: ``base`` (the ``AnchorTracker`` interface and ``AnchorTracks`` arrays, the
``ANCHOR_TRACKERS`` registry, the ``"flow"`` backend and ``track_anchors``, the anchors step's
call), ``lk`` (``"lk"``: the chained flow, steps failing the dense checks re-tracked by
pyramidal Lucas-Kanade; CPU), ``cotracker`` (``"cotracker"``: CoTracker3 on the grid; torch,
imported when chosen), ``coverage`` (how much of the motion the trainers' draw keeps, and the
round trip that measures the reliable spans' accuracy). The public names of ``base`` and
``coverage`` are re-exported here; torch is not imported by ``import stages.anchors``.
"""
from __future__ import annotations

from .base import (ANCHOR_TRACKERS, GENERIC_OPTIONS, AnchorTracker, AnchorTracks, FlowAnchorTracker, anchor_setup,
                   make_anchor_tracker, track_anchors, track_anchors_many)
from .coverage import coverage, roundtrip_to_anchor, weighted_percentile

__all__ = [
    "AnchorTracker",
    "AnchorTracks",
    "FlowAnchorTracker",
    "ANCHOR_TRACKERS",
    "GENERIC_OPTIONS",
    "make_anchor_tracker",
    "anchor_setup",
    "track_anchors",
    "track_anchors_many",
    "coverage",
    "roundtrip_to_anchor",
    "weighted_percentile",
]
