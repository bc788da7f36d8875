"""One clip's computation: the processor that runs stages/ in order on one manifest row, and the
isolation child that gives each clip a time limit and survives a segfaulting decoder or model."""
