# The README's two commands. Both create .venv from the pinned requirements on first use (idempotent).
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Tests and the demo never touch the network; offline mode also skips the hub's retry loop.
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo demo-shapes test bench clean-results

# torch and torchvision are pinned in the same command: an unpinned torchvision pulls a CUDA torch.
$(STAMP): requirements.txt requirements-test.txt tools/torchvision_fix.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet torch==2.13.0 torchvision==0.28.0 -r requirements-test.txt \
	  2>&1 | { grep -v "^WARNING: Location" || true; }
	$(BIN)/python tools/torchvision_fix.py
	touch $@

demo: $(STAMP)
	$(BIN)/snakemake --profile workflows/profiles/local --configfile workflows/config/demo.yaml
	$(BIN)/snakemake --configfile workflows/config/demo.yaml --report results/report.html
	@echo "demo: results/table.parquet, results/report/ (tables, figures), results/report.html"

# The shapes world end to end: trains its tiny VAE/CLIP and a small PixArt through the three stages (CPU).
demo-shapes: $(STAMP)
	$(BIN)/snakemake --profile workflows/profiles/local --configfile workflows/config/demo-shapes.yaml
	$(BIN)/snakemake --configfile workflows/config/demo-shapes.yaml --report results-shapes/report.html
	@echo "demo-shapes: results-shapes/table.parquet, results-shapes/report/, results-shapes/report.html"

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python -m pixart.bench --arch tiny --prompts 16 --repeats 5

clean-results:
	rm -rf results results-shapes .snakemake
