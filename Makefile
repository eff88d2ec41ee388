# lbspeaker: the two commands a newcomer needs are `make demo` and `make test`.
# Both install what they lack (Debian packages with apt-get, Python packages with pip; run as root).

PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
APT_PACKAGES := iproute2 iputils-arping iputils-ping ndisc6 bird2 tcpdump curl procps
PYTEST_ARGS ?=

.PHONY: deps test lint unit demo clean

.stamp-apt:
	@if command -v apt-get >/dev/null 2>&1; then \
	  missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	  if [ -n "$$missing" ]; then \
	    echo "installing Debian packages:$$missing"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  fi; \
	fi
	@touch $@

.stamp-pip: pyproject.toml
	$(PIP) install -q --disable-pip-version-check -e '.[dev]'
	@touch $@

deps: .stamp-apt .stamp-pip

lint: deps
	$(PYTHON) -m ruff check lbspeaker controller tests hack
	$(PYTHON) -m mypy

test: deps lint
	$(PYTHON) -m pytest $(PYTEST_ARGS)

unit: deps
	$(PYTHON) -m pytest tests/unit $(PYTEST_ARGS)

demo: deps
	$(PYTHON) hack/demo.py

clean:
	rm -f .stamp-apt .stamp-pip
