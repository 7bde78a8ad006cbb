# The two set-up commands: `make demo` (main job on the embedded store) and `make test`.
# Each creates .venv and installs emofs into it when needed.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.emofs-installed
STORE ?= ./emofs-store
# Real clips when the shared folder is beside the checkout, else generated samples.
SHARED := ../shared/data
CLIPS ?= $(if $(wildcard $(SHARED)/labels.csv),$(SHARED),demo-clips)

.PHONY: install demo test test-all bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --progress-bar off -e ".[dev]"
	touch $@

install: $(STAMP)

demo: $(STAMP)
	@if [ "$(CLIPS)" = "demo-clips" ] && [ ! -f demo-clips/labels.csv ]; then $(BIN)/emofs samples demo-clips; fi
	$(BIN)/emofs ingest $(CLIPS) --labels $(CLIPS)/labels.csv --store $(STORE)
	$(BIN)/emofs info --store $(STORE)

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m "not gpu"

clean:
	rm -rf $(STORE) demo-clips
