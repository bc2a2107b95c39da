#!/usr/bin/env bash
# System packages the tests and the local pipeline need, from Debian (never downloaded binaries):
#   ffmpeg          video encode/decode (post-process, statistics)
#   python3-numpy   the independent numpy oracle in the sampler tests
# Idempotent: installs only what is missing. Needs root (CI and the dev machines run as root).
#   CIL_SETUP_QUIET=1   print nothing when nothing is missing (scripts/bootstrap.js sets it)
set -euo pipefail
PKGS=(ffmpeg python3-numpy)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  [ -n "${CIL_SETUP_QUIET:-}" ] || echo "setup-system: all present (${PKGS[*]})"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "setup-system: missing ${missing[*]}; run as root: apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "setup-system: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
