# syntax=docker/dockerfile:1
# confsync: a small image that runs as a non-root user. Probes belong to Kubernetes: no HEALTHCHECK.
# Build: docker build -t confsync:0.1.0 .   Lint: hadolint Dockerfile (tests/test_dockerfile.py runs it).
# Size, an estimate (no container engine where this was written, so never built there): the base
# python:3.11-slim-bookworm, about 130 MB unpacked / 45 MB compressed for linux/amd64 as published,
# plus the virtualenv below, measured at 21 MB on disk (without pip): about 150 MB unpacked,
# 50 MB to pull. `docker image ls` after a build gives the real figure.

# Build stage: confsync and its dependencies installed into a virtualenv. Every dependency ships
# manylinux wheels, so nothing is compiled; were one to need it, the compiler would stay here.
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY confsync ./confsync
# A virtualenv without pip of its own, filled by the base image's pip: the final stage copies the
# directory as is (same base image, same path, so its interpreter link and scripts stay valid).
# DL3013 (pin versions) is ignored on purpose: "." is this checkout, and the versions of its
# dependencies are the ranges in pyproject.toml; the project keeps no lock file (yet).
# hadolint ignore=DL3013
RUN python -m venv --without-pip /opt/confsync \
    && pip --python=/opt/confsync/bin/python install --no-cache-dir --disable-pip-version-check ".[all]"

# Final stage: a clean slim Python and the virtualenv, nothing else.
FROM python:3.11-slim-bookworm
COPY --from=build /opt/confsync /opt/confsync
RUN useradd --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin confsync
# Numeric, so Kubernetes' runAsNonRoot can verify it. Pods that signal their app by process name
# override it with the app's UID (securityContext.runAsUser): see docs/kubernetes.md.
USER 10001:10001
# Bytecode was compiled at install time; a read-only root filesystem could not take new .pyc files.
ENV PATH=/opt/confsync/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
ENTRYPOINT ["confsync"]
CMD ["run", "--config", "/etc/confsync/confsync.yaml"]
