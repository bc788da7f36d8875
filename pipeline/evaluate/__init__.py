"""Measuring trajectory following (docs/evaluation.md): an evaluation set drawn from shards
(``evalset``: first frames, captions, the conditioning trajectories drawn as the trainer draws
them, entities, the real frames) and ``evaluate``: the conditioning points tracked in generated
videos, ObjMC under a named protocol, the tracker's own floor on the real frames, plots and
overlays. It reads shards through ``pipeline.shards`` and ``schemas/``, and uses ``stages/``'s
decoder, flow backends and trackers."""
from pipeline.evaluate.evalset import EvalSet, SetError, build_evalset, read_set
from pipeline.evaluate.protocols import PROTOCOLS, Protocol
from pipeline.evaluate.run import EvaluateSetupError, evaluate

__all__ = ["build_evalset", "read_set", "EvalSet", "SetError", "evaluate", "EvaluateSetupError", "PROTOCOLS",
           "Protocol"]
