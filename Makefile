# lbspeaker: the two commands a newcomer needs are `make demo` and `make test`.
# Both install what they lack: Debian packages with apt-get (run as root), Python packages with pip into
# the project's own virtual environment .venv/ (the system Python is left alone). The CLI lands in
# .venv/bin/lbspeaker. `make image` builds the container image without a docker daemon and writes it to
# build/lbspeaker-image.tar (see hack/image/build.sh).

BOOTSTRAP_PYTHON ?= python3
VENV ?= .venv
PYTHON := $(VENV)/bin/python
PIP := $(PYTHON) -m pip --disable-pip-version-check
APT_PACKAGES := iproute2 iputils-arping iputils-ping ndisc6 bird2 tcpdump curl procps nftables shellcheck
# For `make image` and tests/image: building (buildah, debootstrap), running (podman, runc) and
# importing (containerd's ctr) the image. Installed without ever removing a package: Docker's
# containerd.io conflicts with Debian's runc and containerd, and a machine with Docker keeps it (the
# image tests then skip and say why).
IMAGE_APT_PACKAGES := buildah podman runc debootstrap containerd openssl
IMAGE ?= lbspeaker:dev
IMAGE_ARCHIVE ?= build/lbspeaker-image.tar
PYTEST_ARGS ?=

.PHONY: deps test lint unit demo image clean distclean

.stamp-apt:
	@if command -v apt-get >/dev/null 2>&1; then \
	  missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	  image=""; for p in $(IMAGE_APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || image="$$image $$p"; done; \
	  if [ -n "$$missing$$image" ]; then \
	    echo "installing Debian packages:$$missing$$image (a minute or two on a fresh machine; apt-get lists each step)"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -q; \
	  fi; \
	  if [ -n "$$missing" ]; then \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends -o Dpkg::Use-Pty=0 $$missing || exit 1; \
	  fi; \
	  if [ -n "$$image" ]; then \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends --no-remove -o Dpkg::Use-Pty=0 $$image \
	      || echo "warning: could not install$$image without removing packages: no make image here"; \
	  fi; \
	fi
	@touch $@

$(PYTHON):
	$(BOOTSTRAP_PYTHON) -m venv $(VENV)

.stamp-pip: pyproject.toml testkit/pyproject.toml | $(PYTHON)
	@echo "installing Python packages into $(VENV)/ (lbspeaker and its test kit, editable; pip lists each package)"
	$(PIP) install --progress-bar off -e '.[dev]' -e ./testkit
	@touch $@

deps: .stamp-apt .stamp-pip

lint: deps
	$(PYTHON) -m ruff check lbspeaker controller testkit tests hack
	$(PYTHON) -m mypy
	$(VENV)/bin/lint-imports

test: deps lint
	$(PYTHON) -m pytest $(PYTEST_ARGS)

unit: deps
	$(PYTHON) -m pytest tests/unit $(PYTEST_ARGS)

demo: deps
	$(PYTHON) hack/demo.py

image: .stamp-apt
	IMAGE=$(IMAGE) hack/image/build.sh $(IMAGE_ARCHIVE)

clean:
	rm -f .stamp-apt .stamp-pip

distclean: clean
	rm -rf $(VENV)
