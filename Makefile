# ZeCon for ComfyUI: quick start = two commands on a fresh machine.
#
#   make demo          local ComfyUI + this pack, default models downloaded and verified,
#                      the bundled sample restyled by the shipped workflow; prints where it is
#   make demo TINY=1   the same path offline on the miniature world (bench/world): its trained
#                      32-px models restyle one of its pictures, beside the ground truth
#   make test          the full test suite (exactly what .ci/run calls)
#
# Both build (or reuse) the environment with scripts/setup_env.sh: a venv with
# torch 2.14.1 + ComfyUI 0.3.75's requirements, the ComfyUI tree, chromium (tests).
# Locations: $(ZECON_CACHE) (override ZECON_CACHE / ZECON_VENV / ZECON_COMFYUI_DIR).

SHELL := /bin/bash
ZECON_CACHE ?= $(HOME)/.cache/zecon
export ZECON_CACHE
ENV_FILE := $(ZECON_CACHE)/env.sh
TINY ?=
DEMO_ARGS ?=
PYTEST_ARGS ?=
TINY_FLAG := $(if $(filter 1 yes true on,$(TINY)),--tiny,)

.PHONY: help demo test setup sample-image

help:
	@sed -n '1,12p' Makefile

setup:
	bash scripts/setup_env.sh

demo:
	ZECON_SKIP_CHROMIUM=1 bash scripts/setup_env.sh
	source "$(ENV_FILE)" && "$$ZECON_VENV/bin/python" scripts/demo.py $(TINY_FLAG) $(DEMO_ARGS)

# The parity tests run on the golden set in tests/golden (the default); when the full set
# ../shared/golden is beside the checkout (and no ZECON_GOLDEN_DIR is set), they run on it too,
# first, so that the full suite's summary line is the last one printed.
FULL_GOLDEN ?= ../shared/golden

test:
	bash scripts/setup_env.sh
	@if [ -z "$$ZECON_GOLDEN_DIR" ] && [ -f "$(FULL_GOLDEN)/manifest.json" ]; then \
		echo "[test] parity tests on $(FULL_GOLDEN) as well"; \
		source "$(ENV_FILE)" && ZECON_GOLDEN_DIR="$(FULL_GOLDEN)" "$$ZECON_VENV/bin/python" -m pytest -q \
			tests/test_parity.py tests/test_golden_loader.py; \
	else echo "[test] $(FULL_GOLDEN) not found (or ZECON_GOLDEN_DIR set): parity runs on tests/golden only"; fi
	source "$(ENV_FILE)" && ZECON_REQUIRE_COMFY=1 "$$ZECON_VENV/bin/python" -m pytest $(PYTEST_ARGS)

sample-image:
	source "$(ENV_FILE)" && "$$ZECON_VENV/bin/python" scripts/make_sample_image.py
