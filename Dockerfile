# syntax=docker/dockerfile:1.7
# Two images from one file:
#   docker build --target api    -t lethe-api .      # slim: FastAPI, no torch
#   docker build --target worker -t lethe-worker .   # CUDA PyTorch (PyPI's Linux x86_64 wheels
#                                                    # bundle CUDA; the host needs the NVIDIA driver
#                                                    # and container toolkit)
# Dependencies are installed in builder stages into /opt/venv; the runtime images receive only
# that venv and the source, never a compiler, a pip cache or build files.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# -- builders --------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS deps-api
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
WORKDIR /build
COPY pyproject.toml README.md ./
# Only the dependencies: an empty placeholder package stands in for the code and is removed, so
# that a code change does not reinstall them (torch is most of the worker image).
RUN mkdir app worker && touch app/__init__.py worker/__init__.py \
 && pip install . && pip uninstall --yes lethe-unlearning

FROM deps-api AS deps-worker
RUN pip install ".[worker]" && pip uninstall --yes lethe-unlearning

# The code, run from source (PYTHONPATH) so that Alembic finds migrations/ beside app/.
FROM scratch AS source
COPY alembic.ini /srv/lethe/
COPY migrations /srv/lethe/migrations
COPY app /srv/lethe/app
COPY worker /srv/lethe/worker

# -- runtime ---------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/srv/lethe LETHE_DATA_DIR=/srv/lethe/data
# A fixed UID/GID (10001), so a mounted signing key or host folder can be given to it. The data
# folders exist in the image owned by that user: a fresh named volume inherits the ownership.
RUN groupadd --system --gid 10001 lethe \
 && useradd --system --uid 10001 --gid lethe --home-dir /srv/lethe --no-create-home lethe \
 && mkdir -p /srv/lethe/artifacts /srv/lethe/data \
 && chown lethe:lethe /srv/lethe/artifacts /srv/lethe/data \
 && printf '#!/bin/sh\nexec python -m app.cli "$@"\n' > /usr/local/bin/lethe \
 && chmod 0755 /usr/local/bin/lethe
WORKDIR /srv/lethe

FROM runtime AS api
COPY --from=deps-api /opt/venv /opt/venv
COPY --from=source /srv/lethe /srv/lethe
USER lethe
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status != 200)"]
CMD ["lethe", "api", "--host", "0.0.0.0", "--port", "8000"]

FROM runtime AS worker
COPY --from=deps-worker /opt/venv /opt/venv
COPY --from=source /srv/lethe /srv/lethe
USER lethe
ENV LETHE_WORKER_QUEUE=gpu
# Alive means answering the broker's ping under its own node name.
HEALTHCHECK --interval=30s --timeout=15s --start-period=60s --retries=3 \
  CMD celery -A worker.celery_app inspect ping -d "lethe-${LETHE_WORKER_QUEUE}@${HOSTNAME}" --timeout 10 || exit 1
CMD ["sh", "-c", "exec lethe worker --queue \"$LETHE_WORKER_QUEUE\""]
