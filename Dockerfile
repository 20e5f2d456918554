# Python 3.11.13 on Debian 12 (bookworm), pinned. The image talks to a real Kafka: the
# embedded broker (the `embedded` extra, for `make dev` and `make test`) is not in it.
FROM python:3.11.13-slim-bookworm
WORKDIR /app
COPY pyproject.toml constraints.txt README.md topics.yaml ./
COPY schemas ./schemas
COPY streams ./streams
# PIP_CONSTRAINT also pins what pip builds with; the build backend is pinned in pyproject.toml.
RUN PIP_CONSTRAINT=/app/constraints.txt pip install --no-cache-dir /app \
    && useradd --create-home --uid 10001 --user-group signalbox
USER signalbox
# A writable working directory for the default datadir (.signalbox/data).
WORKDIR /home/signalbox
ENTRYPOINT ["signalbox"]
