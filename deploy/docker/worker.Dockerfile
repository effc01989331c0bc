# syntax=docker/dockerfile:1
# A machine-step worker image: the `wf` CLI (`wf worker run <module>:<attribute>`) and the
# examples/ directory. Build from the repository root:
#
#   docker build -f deploy/docker/worker.Dockerfile -t workflow-suite/worker .
#
# The default command runs the example worker; your own worker image can start FROM this
# one and COPY its package, or rebuild it with --build-arg WORKER_PACKAGE=<your dist>.
# Settings: WF_WORKER_* (docs/conventions.md, "Workers"); /health/live on
# WF_WORKER_HEALTH_PORT serves the healthcheck.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.9

FROM ${UV_IMAGE} AS uv

FROM ${PYTHON_IMAGE} AS builder
ARG WORKER_PACKAGE=wf-cli
COPY --from=uv /uv /bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3.11 \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /src
COPY pyproject.toml uv.lock .python-version ./
COPY libs ./libs
COPY services ./services
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --no-editable --package ${WORKER_PACKAGE}

FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 wf \
    && useradd --system --uid 10001 --gid wf --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin wf \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/wf
COPY --from=builder /app/.venv /app/.venv
COPY examples /app/examples
# `wf` is a console script: the current directory is not on sys.path, so put /app there
# for `examples.worker:steps` to import.
ENV PATH="/app/.venv/bin:${PATH}" \
    PYTHONPATH=/app \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    WF_WORKER_HEALTH_HOST=0.0.0.0 \
    WF_WORKER_HEALTH_PORT=8080
WORKDIR /app
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as r; r.urlopen('http://127.0.0.1:' + os.environ.get('WF_WORKER_HEALTH_PORT', '8080') + '/health/live', timeout=2)"]
CMD ["wf", "worker", "run", "examples.worker:steps"]
