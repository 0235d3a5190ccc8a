# Entry points: `make demo` and `make test` (what CI runs). Both create .venv and install into it
# when needed, pinned by requirements/lock.txt so that a new release elsewhere cannot turn main red.
# torch (and the triton that goes with it) is pinned to the CPU wheel this project's machines
# carry; a GPU user installs their own torch into .venv first (or sets PYTHON), and make keeps it.
PYTHON ?= .venv/bin/python
TORCH_PIN ?= torch==2.13.0
TRITON_PIN ?= triton==3.9.0
LOCK := requirements/lock.txt
HF_OLDEST := requirements/hf-oldest.txt
HF_TESTS := tests/test_hf_export.py tests/test_gpt2_import.py
ifeq ($(TIKTOKEN_CACHE_DIR),)
ifneq ($(wildcard ../shared/tiktoken_cache),)
export TIKTOKEN_CACHE_DIR := $(abspath ../shared/tiktoken_cache)
endif
endif

.PHONY: demo test test-suite test-hf-oldest test-latest lock install

.venv/.installed: pyproject.toml $(LOCK)
	test -x $(PYTHON) || python3 -m venv .venv
	$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install -q $(TORCH_PIN) $(TRITON_PIN)
	$(PYTHON) -m pip install -q -c $(LOCK) -e ".[dev]"
	touch $@

install: .venv/.installed

demo: .venv/.installed
	$(PYTHON) -m quadgpt demo

# The suite on the pinned versions, then the Hugging Face tests on the oldest transformers that
# pyproject.toml admits (its own venv: the exported model's code must work across that range).
test: test-suite test-hf-oldest

test-suite: .venv/.installed
	$(PYTHON) -m pytest -q -n 2 --dist loadfile

.venv-hf-oldest/.installed: pyproject.toml $(HF_OLDEST)
	test -x .venv-hf-oldest/bin/python || python3 -m venv .venv-hf-oldest
	.venv-hf-oldest/bin/python -c "import torch" 2>/dev/null || .venv-hf-oldest/bin/pip install -q $(TORCH_PIN)
	.venv-hf-oldest/bin/pip install -q -c $(HF_OLDEST) -e . pytest
	touch $@

test-hf-oldest: .venv-hf-oldest/.installed
	.venv-hf-oldest/bin/python -m pytest -q $(HF_TESTS)

# The whole suite on the newest releases of every dependency (not pinned): run it before
# `make lock`, and whenever you want to know whether the next release breaks quadgpt.
test-latest:
	test -x .venv-latest/bin/python || python3 -m venv .venv-latest
	.venv-latest/bin/python -c "import torch" 2>/dev/null || .venv-latest/bin/pip install -q $(TORCH_PIN) $(TRITON_PIN)
	.venv-latest/bin/pip install -q --upgrade --upgrade-strategy eager -e ".[dev]"
	.venv-latest/bin/python -m pip list 2>/dev/null | grep -iE "^(transformers|accelerate|tokenizers|datasets|huggingface.hub) "
	.venv-latest/bin/python -m pytest -q -n 2 --dist loadfile

# Re-pin requirements/lock.txt to what .venv-latest holds (after `make test-latest` passed).
lock:
	{ sed -n '1,/^# torch and triton/p' $(LOCK); \
	  .venv-latest/bin/pip freeze --exclude-editable | grep -viE '^(torch|triton|nvidia-|quadgpt)'; } > $(LOCK).new
	mv $(LOCK).new $(LOCK)
