# Two commands matter: `make demo` and `make test`. Both install what is missing first.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
APT_PACKAGES := mosquitto mosquitto-clients ffmpeg libsystemd-dev pkg-config python3-venv python3-dev gcc chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck unit bench sysdeps clean

sysdeps:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

$(STAMP): pyproject.toml | sysdeps
	@[ -x $(PY) ] || python3 -m venv $(VENV)
	@echo "installing the package and its tools into $(VENV) (log: $(VENV)/install.log)"
	@$(PY) -m pip install -q --upgrade pip > $(VENV)/install.log 2>&1 \
	  && $(PY) -m pip install -q -e '.[dev]' >> $(VENV)/install.log 2>&1 \
	  || { tail -30 $(VENV)/install.log; exit 1; }
	@touch $(STAMP)

demo: sysdeps $(STAMP)
	$(VENV)/bin/edge demo

lint: $(STAMP)
	$(VENV)/bin/ruff check edge tests bench hw-sim
	$(VENV)/bin/ruff format --check edge tests bench hw-sim

typecheck: $(STAMP)
	$(VENV)/bin/mypy

unit: $(STAMP)
	$(VENV)/bin/pytest -q

test: sysdeps $(STAMP) lint typecheck unit

bench: $(STAMP)
	@$(PY) -m pip install -q -e '.[bench]' >> $(VENV)/install.log 2>&1
	$(PY) bench/alarm_startup.py
	$(PY) bench/alarm_latency.py
	$(PY) bench/alarm_soak.py
	$(PY) bench/uplink.py
	$(PY) bench/dc09_drain.py
	$(PY) bench/motion.py
	$(PY) bench/video_memory.py
	$(PY) bench/clip_memory.py
	$(PY) bench/live.py
	$(PY) bench/diag.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis .demo
