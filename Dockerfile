# syntax=docker/dockerfile:1.7
# Two targets: `api` (slim, no torch) and `worker` (CUDA PyTorch). Build with
#   docker build --target api -t lethe-api .
#   docker build --target worker -t lethe-worker .

FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN groupadd --system lethe && useradd --system --gid lethe --home /srv/lethe lethe
WORKDIR /srv/lethe
COPY pyproject.toml README.md alembic.ini ./
COPY app ./app
COPY worker ./worker
COPY migrations ./migrations

FROM base AS api
RUN pip install .
USER lethe
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status == 200 else 1)"
CMD ["lethe", "api", "--host", "0.0.0.0", "--port", "8000"]

FROM base AS worker
# The worker extra pins torch/torchvision; on a CUDA host the same wheels use the GPU.
RUN pip install ".[worker]"
USER lethe
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
  CMD celery -A worker.celery_app inspect ping -d "lethe-${LETHE_WORKER_QUEUE:-gpu}@$HOSTNAME" --timeout 5 || exit 1
CMD ["sh", "-c", "lethe worker --queue ${LETHE_WORKER_QUEUE:-gpu}"]
