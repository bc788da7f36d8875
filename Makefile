# The two commands a new user needs:  make shards   and   make test
# Everything installs itself into .venv on first use.
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python

DATASET ?= sample
DATA ?= data/sample
OUT ?= out/$(DATASET)
PROFILE ?= dragnuwa-hd
ARGS ?=
# The embedded sample is tiny: small shards so that it shows several shards and workers.
ifeq ($(DATASET),sample)
SHARD_ARGS ?= --samples-per-shard 2
endif

.PHONY: shards test bench sample venv venv-dev clean

$(VENV)/.base: pyproject.toml
	$(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -e .
	touch $@

$(VENV)/.dev: $(VENV)/.base
	$(VPY) -m pip install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.base
venv-dev: $(VENV)/.dev

sample: $(VENV)/.base
	@if [ "$(DATASET)" = "sample" ] && [ ! -f "$(DATA)/webvid.csv" ]; then \
	  $(VPY) -m pipeline sample --out "$(DATA)"; fi

shards: sample
	$(VPY) -m pipeline run --dataset $(DATASET) --data "$(DATA)" --out "$(OUT)" --profile $(PROFILE) $(SHARD_ARGS) $(ARGS)

test: $(VENV)/.dev
	$(VPY) -m pytest -q tests $(ARGS)

bench: $(VENV)/.dev
	$(VPY) -m bench $(ARGS)

clean:
	rm -rf out data/sample
