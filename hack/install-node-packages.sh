#!/usr/bin/env bash
# Install the Debian packages a real test node and `make images` need, once per machine:
# runc (the OCI runtime containerd calls), the CNI plugins (bridge, host-local, loopback),
# iptables (the node's no-egress rule; kubelet's own chains), buildah (builds the images when
# no Docker engine runs), mmdebstrap (the local Debian base image). Needs root, as CI runs.
# kubelet, containerd, CoreDNS, crictl and MinIO are built from source: hack/build-node.sh.
set -euo pipefail
PACKAGES=(runc containernetworking-plugins iptables buildah mmdebstrap uidmap)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "[install-node-packages] missing Debian packages: ${missing[*]} (run as root: apt-get install ${missing[*]})" >&2
  exit 1
fi
echo "[install-node-packages] apt-get install ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
