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

.PHONY: demo demo-gpu demo-random test bench constraints clean-results

# torch and torchvision are pinned in the same command: an unpinned torchvision pulls a CUDA torch.
$(STAMP): requirements.txt requirements-test.txt constraints.txt tools/torchvision_fix.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet torch==2.13.0 torchvision==0.28.0 -r requirements-test.txt \
	  2>&1 | { grep -v "^WARNING: Location" || true; }
	$(BIN)/python tools/torchvision_fix.py
	touch $@

# The shapes world end to end (workflows/config/demo.yaml): trains its tiny VAE/CLIP and a small PixArt
# through the three stages on the CPU, evaluates every checkpoint and ends with the HTML report.
demo: $(STAMP)
	$(BIN)/snakemake --profile workflows/profiles/local --configfile workflows/config/demo.yaml
	$(BIN)/snakemake --configfile workflows/config/demo.yaml --report results/report.html
	@tail -n 1 results/logs/report.log
	@echo "demo: results/report/README.md (tables, checks and figures on one page), results/report.html, results/table.parquet"

# The same demo at GPU size (workflows/config/demo-gpu.yaml merged over demo.yaml): decides the compositional
# check the CPU demo cannot; about 15 minutes on one H100 (an estimate).
GPU_DEMO := --configfile workflows/config/demo.yaml workflows/config/demo-gpu.yaml
demo-gpu: $(STAMP)
	@$(BIN)/python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 'demo-gpu: torch in \
	$(BIN) sees no CUDA device, and its 33,000 steps at batch 256 would take about 17 hours on 2 CPU cores (1.9 s a step); make demo is the CPU size.')"
	$(BIN)/snakemake --profile workflows/profiles/local $(GPU_DEMO)
	$(BIN)/snakemake $(GPU_DEMO) --report results-gpu/report.html
	@tail -n 1 results-gpu/logs/report.log
	@echo "demo-gpu: results-gpu/report/tables/checks.md, results-gpu/report.html"

# Random tiny models through every real scorer backend's code path (numbers without meaning).
demo-random: $(STAMP)
	$(BIN)/snakemake --profile workflows/profiles/local --configfile workflows/config/demo-random.yaml
	$(BIN)/snakemake --configfile workflows/config/demo-random.yaml --report results-random/report.html
	@tail -n 1 results-random/logs/report.log
	@echo "demo-random: results-random/report/README.md, results-random/report.html, results-random/table.parquet"

test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python -m pixart.bench --arch tiny --prompts 16 --repeats 5

# constraints.txt from the current venv (after a requirements change has passed make test); its comment header kept.
constraints: $(STAMP)
	{ grep '^#' constraints.txt; $(BIN)/python -m pip freeze --exclude torch --exclude torchvision; } > constraints.new
	mv constraints.new constraints.txt

clean-results:
	rm -rf results results-random .snakemake
