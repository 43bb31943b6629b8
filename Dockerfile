# confsync: a small image that runs as a non-root user. Probes belong to Kubernetes: no HEALTHCHECK.
# Build: docker build -t confsync:0.1.0 .   (or podman build). No `# syntax=` line: BuildKit would
# fetch that frontend from a registry, and the build must work offline but for the package index.
# Tested: scripts/image-test builds this file unchanged with podman and runs every mode the way
# docs/kubernetes.md says (tests/test_image.py); hadolint reads it (tests/test_dockerfile.py).
# Size: see docs/operations.md (measured on a stand-in base, since nothing could be pulled there).
#
# The base is pinned by name. For a reproducible pull from a real registry pin its digest too, e.g.
#   python:3.11-slim-bookworm@sha256:a36c24f9cbdf4fd0f52d67f0823eeac19c2028c637cecc392d97f980d4fec56b
# (one the tag has carried; tags move: read the current one with
# `skopeo inspect docker://docker.io/library/python:3.11-slim-bookworm`).

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
LABEL org.opencontainers.image.title="confsync" \
      org.opencontainers.image.description="Keep an application's config files true to a central store: watch, render, write atomically, reload." \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11-slim-bookworm"
COPY --from=build /opt/confsync /opt/confsync
RUN useradd --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin confsync
# Numeric, so Kubernetes' runAsNonRoot can verify it. Pods that signal their app by process name
# override it with the app's UID (securityContext.runAsUser): see docs/kubernetes.md.
USER 10001:10001
# Bytecode was compiled at install time; a read-only root filesystem could not take new .pyc files.
ENV PATH=/opt/confsync/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
ENTRYPOINT ["confsync"]
CMD ["run", "--config", "/etc/confsync/confsync.yaml"]
