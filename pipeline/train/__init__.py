"""The trainers' library: read shards by URL, draw trajectories, build DragNUWA / DragEntity
conditions. ``from pipeline.train import make_dataset, read_samples``. It depends only on schemas/,
the tar format (pipeline/shards.py) and stages.trajectories' drawing rules; torch is imported by the
conditions and augmentation (the ``torch`` extra), not by reading samples."""
from pipeline.shards import expand_urls
from pipeline.train.loader import LoaderOptions, TrainerDataset, make_dataset
from pipeline.train.sources import read_samples

__all__ = ["make_dataset", "read_samples", "expand_urls", "LoaderOptions", "TrainerDataset"]
