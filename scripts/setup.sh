#!/usr/bin/env bash
# Idempotent setup for a Debian 12 machine, run as root: Debian packages, the .venv with
# the pinned Python packages (ryu patched for eventlet 0.33), and the OVS daemons.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(openvswitch-switch pptpd pptp-linux socat iproute2 ethtool iptables
              tcpdump tshark procps make iputils-ping netsniff-ng traceroute
              mininet prometheus etcd-server etcd-client)  # prometheus: promtool, for dashboards/ in the tests; etcd: the store on etcd

log() { printf '[setup] %s\n' "$*"; }

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$pkg")
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
  # Debian's prometheus and etcd-server start a server each (ports 9090, 2379) when
  # systemd runs; the tests want only promtool and the etcd binary (they start their own
  # clusters), so a server this setup installed is stopped and left disabled.
  if [ -d /run/systemd/system ]; then
    for unit in prometheus:prometheus etcd-server:etcd; do
      if [[ " ${missing[*]} " == *" ${unit%%:*} "* ]]; then
        systemctl disable --now "${unit#*:}" >/dev/null 2>&1 || true
      fi
    done
  fi
fi

# The .venv is rebuilt when the requirement files or the ryu patch change.
stamp_src=$(cat requirements.txt requirements-dev.txt scripts/patch_ryu.py | sha256sum | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat .venv/.setup-stamp 2>/dev/null)" != "$stamp_src" ]; then
  log "creating .venv"
  rm -rf .venv
  python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check 'setuptools<60' wheel
  .venv/bin/pip install -q --disable-pip-version-check --no-build-isolation -r requirements-dev.txt
  .venv/bin/python scripts/patch_ryu.py
  echo "$stamp_src" > .venv/.setup-stamp
fi
# The project itself, editable: the commands pptp-alg-gateway and pptp-alg-demux in
# .venv/bin, with alg/, demux/ and ryu_apps/ imported from this tree (pip builds it with
# setuptools>=77 in an isolated environment; again only when pyproject.toml changes).
project_stamp=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -x .venv/bin/pptp-alg-gateway ] || [ "$(cat .venv/.project-stamp 2>/dev/null)" != "$project_stamp" ]; then
  log "installing the project into .venv (editable)"
  .venv/bin/pip install -q --disable-pip-version-check --no-deps -e .
  echo "$project_stamp" > .venv/.project-stamp
fi
# The repo root on the venv's path, so that topo/, bench/ and tests/ import from any
# directory too.
site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$PWD" > "$site/pptp_alg_repo.pth"

# OVS daemons for the userspace datapath (no kernel module on these machines).
if ! ovs-vsctl --timeout=3 show >/dev/null 2>&1; then
  log "starting ovsdb-server"
  /usr/share/openvswitch/scripts/ovs-ctl --no-ovs-vswitchd --system-id=random start >/dev/null
fi
if ! ovs-appctl --timeout=3 -t ovs-vswitchd version >/dev/null 2>&1; then
  log "starting ovs-vswitchd (userspace datapath)"
  /usr/share/openvswitch/scripts/ovs-ctl --no-ovsdb-server --no-monitor start >/dev/null 2>&1 || true
  ovs-appctl --timeout=10 -t ovs-vswitchd version >/dev/null
fi
# The userspace datapath's record, where the gateways' zones keep their timeout policies
# (made here once, so that labs started side by side never make it at the same time:
# a record made anew replaces the one there with its policies).
if [ -z "$(ovs-vsctl --timeout=5 --if-exists get Open_vSwitch . datapaths:netdev)" ]; then
  ovs-vsctl --timeout=5 -- --id=@dp create Datapath datapath_version=0 \
    -- set Open_vSwitch . datapaths:netdev=@dp >/dev/null
fi
log "ready: $(ovs-vsctl --version | head -1), $(.venv/bin/python --version)"
