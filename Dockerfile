# syntax=docker/dockerfile:1
# The churn prediction service. Two stages: `build` resolves the serve set from uv.lock and
# installs the package; the final stage gets only the virtual environment and the committed
# model, so no uv, uv cache, notebooks or training libraries reach production.
# tests/test_container_replay.py parses this file and replays it without a Docker engine.

FROM python:3.12.12-slim-bookworm AS build
COPY --from=ghcr.io/astral-sh/uv:0.13.9 /uv /uvx /bin/
# Compile bytecode at build time (faster cold start); copy, not hard-link, out of the cache mount;
# use the image's Python, never a downloaded one.
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /app

# Dependencies first: this layer is rebuilt only when the lock changes, not when the code does.
# [project] dependencies are the serve set; the train and dev groups stay out.
COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-default-groups --no-install-project

# Then the package itself, installed as a wheel (not editable), so the source tree can stay behind.
COPY README.md ./
COPY churn_deploy/ ./churn_deploy/
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-default-groups --no-editable


FROM python:3.12.12-slim-bookworm
# A fixed numeric id, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
RUN groupadd --system --gid 10001 churn \
 && useradd --system --uid 10001 --gid churn --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin churn
WORKDIR /app
# Owned by root and read-only to everyone else: the service user cannot alter its code or model.
COPY --from=build /app/.venv /app/.venv
# The committed model: CI proves retraining reproduces these bytes, so the image needs no data or scikit-learn.
COPY model/ /app/model/
ENV PATH="/app/.venv/bin:$PATH" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    CHURN_MODEL_DIR=/app/model \
    CHURN_HOST=0.0.0.0 \
    CHURN_WORKERS=1 \
    CHURN_LOG_FORMAT=json \
    CHURN_ACCESS_LOG=true
USER 10001:10001
# No CHURN_PORT above: the service listens on CHURN_PORT if you set one, else on the platform's $PORT
# (Cloud Run, Heroku, Render set it), else on 9696.
EXPOSE 9696
# Liveness from inside the container, with the standard library (the slim image has no curl), on the same port.
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/health' % (os.environ.get('CHURN_PORT') or os.environ.get('PORT') or '9696'), timeout=2)"]
# Host, workers and model come from the CHURN_* variables above: `docker run -e CHURN_WORKERS=4 …`.
# Arguments after the image name go to churn_serve: `docker run IMAGE --workers 2`.
ENTRYPOINT ["churn_serve"]
