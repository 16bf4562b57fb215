# finetune-operator: every target sets itself up on a fresh machine with only Python 3.11.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
PYTEST_ARGS ?=

.PHONY: setup test test-all test-fast lint typecheck crds demo bench clean help

help:
	@echo "make demo      run the quickstart FinetuneJobs locally (emulated API server + real operator + CPU trainer)"
	@echo "make test      lint, type-check and run the default test tiers"
	@echo "make test-all  every test, including the slow end-to-end ones"
	@echo "make crds      regenerate crds/ and the chart's CRDs from the API models"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# The CPU wheel of torch first: an unpinned torch would pull a multi-GB CUDA build.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[trainer,llm,openai,gradient,dev]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

setup: $(STAMP)

lint: setup
	$(BIN)/ruff check operator trainer_image tests bench
	$(BIN)/ruff format --check operator trainer_image tests bench
	$(BIN)/lint-imports

typecheck: setup
	$(BIN)/mypy operator/finetune_operator trainer_image/finetune_trainer

test: setup lint typecheck
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

test-all: setup lint typecheck
	$(BIN)/python -m pytest $(PYTEST_ARGS)

crds: setup
	$(BIN)/finetune crds -o crds
	$(BIN)/finetune crds -o helm/finetune-operator/crds

demo: setup
	$(BIN)/finetune local examples/quickstart/ --workdir runs/demo

bench: setup
	$(BIN)/python bench/trainer.py
	$(BIN)/python bench/operator_scale.py
	$(BIN)/python bench/quota_admission.py

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
