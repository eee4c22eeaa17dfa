# syntax=docker/dockerfile:1
# pbxguard in a container: the wheel is built in one stage and installed into a slim Python
# 3.11 in the next, which runs `pbxguard run` as the unprivileged user pbxguard.
#
#   docker build -t pbxguard:0.1.0 .
#   docker run -d --name pbxguard --network host --env-file /etc/pbxguard/secrets.env \
#       -v /etc/pbxguard:/etc/pbxguard:ro -v pbxguard-state:/var/lib/pbxguard pbxguard:0.1.0
#
# Settings: /etc/pbxguard/pbxguard.toml (mount the site's directory there, read-only). State
# (the SQLite ledger and the spools) lives in the volume /var/lib/pbxguard. Base images are
# pinned by exact tag; docs/deployment.md says how to pin them by digest as well.

FROM python:3.11.13-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY src ./src
# pbxguard's wheel and every dependency's, so the next stage installs without an index.
RUN python -m pip wheel --wheel-dir /wheels .


FROM python:3.11.13-slim-bookworm
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

RUN groupadd --system --gid 10001 pbxguard \
 && useradd --system --uid 10001 --gid pbxguard --home-dir /var/lib/pbxguard \
      --no-create-home --shell /usr/sbin/nologin pbxguard \
 && install -d -o pbxguard -g pbxguard -m 0750 /var/lib/pbxguard \
 && install -d -m 0755 /etc/pbxguard

RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m venv /opt/pbxguard \
 && /opt/pbxguard/bin/pip install --no-index --find-links=/wheels pbxguard

# STATE_DIRECTORY is what systemd sets for StateDirectory=: the same place in both setups.
# The working directory is the state directory too, so a ledger or spool path the settings
# leave relative lands in the volume.
ENV PATH=/opt/pbxguard/bin:$PATH \
    STATE_DIRECTORY=/var/lib/pbxguard
WORKDIR /var/lib/pbxguard
VOLUME ["/var/lib/pbxguard"]
USER pbxguard:pbxguard

# FastAGI: the dialplan asks here before every outside call.
EXPOSE 4573
# Healthy while the FastAGI server accepts connections (a connection that sends nothing is
# dropped quietly). Set PBXGUARD_AGI__PORT when the settings move it.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os, socket; socket.create_connection(('127.0.0.1', int(os.environ.get('PBXGUARD_AGI__PORT') or 4573)), timeout=3).close()"]

STOPSIGNAL SIGTERM
CMD ["pbxguard", "run", "--config", "/etc/pbxguard/pbxguard.toml"]
