# One image for both programs: `lbspeaker controller` and `lbspeaker speaker`.
#   docker build -t lbspeaker:dev .
FROM python:3.11-slim AS build
WORKDIR /src
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# Dependencies first, so that a source edit does not reinstall them.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; d = tomllib.load(open('pyproject.toml', 'rb')); print('\n'.join(d['project']['dependencies']))" > /tmp/requirements.txt \
 && python -m venv /opt/lbspeaker \
 && /opt/lbspeaker/bin/pip install -r /tmp/requirements.txt
COPY lbspeaker ./lbspeaker
COPY controller ./controller
RUN /opt/lbspeaker/bin/pip install --no-deps .

FROM python:3.11-slim
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
