# syntax=docker/dockerfile:1
# The definition-registry image: `python -m definition_registry` serves on :8001; `docker run <image> migrate`
# runs `python -m definition_registry migrate`. Build from the repository root:
#
#   docker build -f deploy/docker/definition-registry.Dockerfile -t workflow-suite/definition-registry .
#
# Two stages: uv installs the locked dependencies and the workspace packages (not
# editable) into /app/.venv; the runtime stage is python-slim with that venv only, run as
# uid 10001, writing nothing outside /tmp (a read-only root filesystem works).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.9

FROM ${UV_IMAGE} AS uv

FROM ${PYTHON_IMAGE} AS builder
COPY --from=uv /uv /bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3.11 \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /src
# The whole workspace: --locked checks uv.lock against every member's pyproject.toml.
# The cache mount keeps a rebuild after a source change fast.
COPY pyproject.toml uv.lock .python-version ./
COPY libs ./libs
COPY services ./services
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --no-editable --package definition-registry

FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 wf \
    && useradd --system --uid 10001 --gid wf --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin wf \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/wf
COPY --from=builder /app/.venv /app/.venv
ENV PATH="/app/.venv/bin:${PATH}" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DEFINITION_REGISTRY_HOST=0.0.0.0 \
    DEFINITION_REGISTRY_PORT=8001
WORKDIR /app
USER 10001:10001
EXPOSE 8001
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as r; r.urlopen('http://127.0.0.1:' + os.environ.get('DEFINITION_REGISTRY_PORT', '8001') + '/health/live', timeout=2)"]
ENTRYPOINT ["python", "-m", "definition_registry"]
CMD []
