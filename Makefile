# Two entry points: `make demo` and `make test`. Both create .venv and install into it when needed.
# torch is pinned to the CPU wheel this project's machines carry; a GPU user installs their own
# torch into .venv first (or sets PYTHON to an interpreter that already has it).
PYTHON ?= .venv/bin/python
TORCH_PIN ?= torch==2.13.0
ifeq ($(TIKTOKEN_CACHE_DIR),)
ifneq ($(wildcard ../shared/tiktoken_cache),)
export TIKTOKEN_CACHE_DIR := $(abspath ../shared/tiktoken_cache)
endif
endif

.PHONY: demo test install

.venv/.installed: pyproject.toml
	test -x $(PYTHON) || python3 -m venv .venv
	$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install -q $(TORCH_PIN)
	$(PYTHON) -m pip install -q -e ".[dev]"
	touch $@

install: .venv/.installed

demo: .venv/.installed
	$(PYTHON) -m quadgpt demo

test: .venv/.installed
	$(PYTHON) -m pytest -q -n 2 --dist loadfile
