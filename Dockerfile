# confsync: a small image that runs as a non-root user. Probes belong to Kubernetes: no HEALTHCHECK.
# Build stage: wheels for confsync and its dependencies (the compiler stays here).
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY confsync ./confsync
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[all]"

# Final stage: the wheels installed into a clean slim Python, nothing else.
FROM python:3.11-slim-bookworm
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels "confsync[all]" \
    && useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin confsync
USER 10001:10001
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
ENTRYPOINT ["confsync"]
CMD ["run", "--config", "/etc/confsync/confsync.yaml"]
