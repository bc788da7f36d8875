"""Per-clip computations as plain functions and classes on numpy arrays.

Nothing here imports ``pipeline/`` or Ray (tests/stages/test_boundaries.py checks it): the
clip steps (``pipeline/steps/``) read the configuration and call these modules with explicit
values. ``registry`` (named factories,
lazy entries) and ``devices`` (``resolve_device``) serve the packages ``decoders/`` (video
decoder backends), ``flow/`` (dense optical flow) and ``entities/`` (masks -> incircles ->
tracked centers) and the modules
``decode``, ``motion``, ``trajectories``, ``captions`` and ``errors``.
"""
