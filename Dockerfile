# One image for every process; the command picks it (`cqrs write-server`, `cqrs migrate`, ...).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# .dockerignore keeps the venv, local data, tests and caches out of the context.
COPY . .
RUN pip install . \
    && useradd --system --uid 10001 --no-create-home cqrs

USER cqrs
# gRPC: write server, read server. Prometheus: write, read, projector.
EXPOSE 50051 50052 9101 9102 9103
ENTRYPOINT ["cqrs"]
CMD ["--help"]
