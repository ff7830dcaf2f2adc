# `make demo` and `make test` do all the set-up on a fresh machine: they create .venv and install the project into it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# torch is installed first and separately so that a site may choose its own build (CUDA, CPU, another release).
TORCH_PACKAGES ?= torch==2.14.1 torchvision==0.29.1
SYNTH_DIR := data/synthetic_coco

.PHONY: install test lint demo data clean-venv

$(VENV)/.installed: setup.py requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch, torchvision" 2>/dev/null || $(PY) -m pip install -q $(TORCH_PACKAGES)
	$(PY) -m pip install -q -e ".[tests,deploy,analysis]"
	touch $@

install: $(VENV)/.installed

test: install
	$(PY) -m pytest -q tests

# ruff only: the check needs neither torch nor the project installed.
lint:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/ruff --version 2>/dev/null | grep -q "0.17.6" || $(PY) -m pip install -q "ruff==0.17.6"
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# A data set made before the instance masks were added is made again (same images and boxes, now with masks).
data: install
	grep -qs '"segmentation"' $(SYNTH_DIR)/annotations/instances_val2017.json || $(PY) tools/make_synthetic_coco.py $(SYNTH_DIR)

demo: data
	$(PY) exp/demo.py --work-dir work_dirs/demo

clean-venv:
	rm -rf $(VENV)
