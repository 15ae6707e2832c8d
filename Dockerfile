# One image for every role: the API (imagegate serve), the worker (imagegate worker) and the
# one-shot migration (imagegate migrate). Dependencies come from the hash-checked lock.
FROM python:3.11-slim AS base

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    IMAGEGATE_HOST=0.0.0.0 IMAGEGATE_DATA_DIR=/data

WORKDIR /app
COPY requirements.lock ./
RUN pip install --require-hashes --no-deps -r requirements.lock

COPY pyproject.toml README.md alembic.ini ./
COPY core ./core
COPY api ./api
COPY worker ./worker
COPY imagegate ./imagegate
COPY migrations ./migrations
RUN pip install --no-deps --no-build-isolation -e . \
    && useradd --create-home --uid 10001 imagegate \
    && mkdir -p /data && chown imagegate /data

USER imagegate
VOLUME ["/data"]
EXPOSE 2407
CMD ["imagegate", "serve"]
