# The worker image: the package, its migrations and the arq command.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /srv/memory-worker

COPY pyproject.toml README.md alembic.ini ./
COPY app ./app
COPY migrations ./migrations
# Editable: the worker finds alembic.ini and migrations/ beside the package.
RUN pip install -e . && useradd --system --no-create-home memory && chown -R memory /srv/memory-worker
USER memory

CMD ["arq", "app.workers.unified_worker.UnifiedWorkerSettings"]
