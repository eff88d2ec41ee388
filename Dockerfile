# One image for both programs: `lbspeaker controller` and `lbspeaker speaker`.
#   docker build -t lbspeaker:dev .        # any engine; the base is the official python:3.11-slim
#   make image                             # no engine needed: buildah, and a Debian base that
#                                          # hack/image/base.sh makes with debootstrap (see README)
# BASE is the runtime's base: a Debian-like image whose python3 (3.11 or later) is at the same path as
# in BUILD_BASE, which also needs `python3 -m venv` with pip. They are one image unless a base is too
# small to build in (Debian's python3 without python3-venv).
ARG BASE=python:3.11-slim
ARG BUILD_BASE=${BASE}

FROM ${BUILD_BASE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# Dependencies first, from pyproject.toml alone, so that a source or README edit does not reinstall them.
COPY pyproject.toml ./
RUN python3 -c "import tomllib; d = tomllib.load(open('pyproject.toml', 'rb')); print('\n'.join(d['project']['dependencies']))" > /tmp/requirements.txt \
 && python3 -m venv /opt/lbspeaker \
 && /opt/lbspeaker/bin/pip install -r /tmp/requirements.txt
COPY README.md ./
COPY lbspeaker ./lbspeaker
COPY controller ./controller
# Then the trim (tests/image/test_image.py checks each rule on the built image):
# - kubernetes' asyncio client (kubernetes/aio, 68 MB with its bytecode) and the aiohttp stack only it
#   imports: lbspeaker talks to the API server through the synchronous ApiClient and urllib3;
# - pip and setuptools (nothing installs at run time), the venv's activate scripts, dependencies' tests;
# - bytecode: rewritten as unchecked-hash .pyc, valid whatever the files' times (the root filesystem
#   is read-only, so Python could never refresh a stale timestamp-based .pyc and would recompile each
#   module on every start); none for kubernetes' generated API classes and models (23 MB of .pyc):
#   the programs never import them (they stay importable, compiled in memory if ever needed).
RUN /opt/lbspeaker/bin/pip install --no-deps --no-compile . \
 && /opt/lbspeaker/bin/pip uninstall -q -y aiohttp aiohttp-retry aiohappyeyeballs aiosignal attrs frozenlist \
      multidict propcache yarl \
 && site=$(/opt/lbspeaker/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))') \
 && rm -rf "$site/kubernetes/aio" \
 && /opt/lbspeaker/bin/python -m pip uninstall -q -y pip setuptools \
 && rm -f /opt/lbspeaker/bin/activate* /opt/lbspeaker/bin/Activate.ps1 \
 && find "$site" -mindepth 2 -type d \( -name tests -o -name test \) -prune -exec rm -rf {} + \
 && find /opt/lbspeaker -name __pycache__ -prune -exec rm -rf {} + \
 && /opt/lbspeaker/bin/python -m compileall -q -j 0 --invalidation-mode unchecked-hash \
      -x '/kubernetes/client/(api|models)/' /opt/lbspeaker/lib \
 && /opt/lbspeaker/bin/python -c "import controller.main, lbspeaker.cli, lbspeaker.speaker.main, exabgp.application"

FROM ${BASE}
# uid/gid 65532 ("nonroot") runs the controller; the speaker DaemonSet sets runAsUser: 0 because raw
# sockets need root's effective capabilities (see deploy/speaker.yaml).
RUN groupadd --system --gid 65532 nonroot \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin nonroot
COPY --from=build /opt/lbspeaker /opt/lbspeaker
ENV PATH=/opt/lbspeaker/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 65532:65532
EXPOSE 7472/tcp 7946/udp
ENTRYPOINT ["lbspeaker"]
CMD ["--help"]
