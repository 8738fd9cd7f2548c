# edgecv: the two commands a new user runs (README):
#   make demo   set up, then run the live smile detector on a real video with the shipped model
#   make test   set up, then run the test suite on the real data
# Both create .venv themselves and install what they need; nothing relies on hand-installed tools.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# The shared real data beside the checkout when it is there; otherwise the registry downloads.
SHARED := $(abspath ../shared/data)
export EDGECV_DATA ?= $(if $(wildcard $(SHARED)),$(SHARED),)
export KERAS_BACKEND ?= tensorflow
export TF_CPP_MIN_LOG_LEVEL ?= 3
# Debian packages the tests use: ffmpeg (network streams), Xvfb + xwd + ImageMagick (a real window),
# chromium + chromium-driver (the live view in a real browser) and mosquitto (a real MQTT broker).
APT_PKGS := ffmpeg xvfb x11-apps imagemagick xdotool chromium chromium-driver mosquitto

.PHONY: demo test venv venv-runtime system-deps clean help

help:
	@echo "make demo   run the smile detector on a real video (writes out/smile-demo.mp4)"
	@echo "make test   run the test suite"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# The runtime only: what an edge box installs (no TensorFlow). Enough for the demo.
$(VENV)/.runtime: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

# Everything: training, export, tests ([dev] includes [jax]: tests/test_train_devices.py trains on
# the JAX backend over two forced CPU devices).
$(VENV)/.dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e ".[dev]"
	touch $@ $(VENV)/.runtime

# Test-only consumers of the exported artefacts (tests/test_interop_*.py): MediaPipe Tasks without
# its declared dependency on opencv-contrib-python, which is OpenCV 5.x (no CascadeClassifier) and a
# second `cv2` beside opencv-python 4.x; its real run-time dependencies are installed by name
# (docs/interop.md). OpenVINO comes with the [dev] extra ([openvino]). Never on the edge install.
MEDIAPIPE := mediapipe==1.2.3
MEDIAPIPE_DEPS := "absl-py~=2.3" certifi "sounddevice~=0.5" "flatbuffers~=25.9" matplotlib
$(VENV)/.interop: $(VENV)/.dev
	$(BIN)/pip install -q --no-deps $(MEDIAPIPE)
	$(BIN)/pip install -q $(MEDIAPIPE_DEPS)
	@if $(BIN)/pip list 2>/dev/null | grep -qi '^opencv-contrib'; then \
	  echo "opencv-contrib-python is installed beside opencv-python: two cv2 packages"; exit 1; fi
	touch $@

venv: $(VENV)/.dev

system-deps:
	@missing=""; for c in ffmpeg Xvfb xwd import xdotool chromium chromedriver /usr/sbin/mosquitto; do command -v $$c >/dev/null || missing=1; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO="sudo -n"; \
	  else echo "need root (or sudo) to install: $(APT_PKGS)"; exit 1; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $(APT_PKGS) >/dev/null; \
	fi

demo: $(VENV)/.runtime
	@mkdir -p out
	$(BIN)/edgecv smile --source video:smile.mp4 --no-display --save out/smile-demo.mp4 \
	    --json-out out/smile-demo.jsonl
	@echo "annotated video: out/smile-demo.mp4   events: out/smile-demo.jsonl"

test: $(VENV)/.dev $(VENV)/.interop system-deps
	$(BIN)/python -m pytest -q -p no:cacheprovider --durations=15

clean:
	rm -rf $(VENV) out .pytest_cache
