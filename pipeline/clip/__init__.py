"""One clip's computation, no Ray: the clip as it travels (``work``), the one loop over the run's
steps (``loop``), the isolation child that gives each clip a time limit and survives a
segfaulting decoder or model (``isolation``), and a worker's runtime settings (``runtime``)."""
