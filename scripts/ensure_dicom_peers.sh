#!/usr/bin/env bash
# Makes sure the real DICOM peers of the integration tests are installed: Orthanc with its
# DICOMweb plugin (the outside PACS) and dcmtk (the outside modalities). Each test session
# starts its own Orthanc on free loopback ports (tests/orthanc_peer.py), so the system-wide
# service Debian's package would start on 4242/8042 is kept from starting and disabled.
set -euo pipefail

packages=(orthanc orthanc-dicomweb dcmtk)

installed() {
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" = "installed" ]
}

missing=()
for package in "${packages[@]}"; do
    installed "$package" || missing+=("$package")
done

if [ "${#missing[@]}" -gt 0 ]; then
    echo "Installing the DICOM test peers: ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    # policy-rc.d exit 101 tells invoke-rc.d not to start services during the install; one
    # already there (a container image's own) is left alone and wins.
    own_policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        own_policy=/usr/sbin/policy-rc.d
        printf '#!/bin/sh\nexit 101\n' >"$own_policy"
        chmod 755 "$own_policy"
        trap 'rm -f "$own_policy"' EXIT
    fi
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# Stopped and disabled every time, not only after our own install: a machine may have it
# from elsewhere, and the tests must never meet a stray Orthanc holding its ports or disk.
if [ -x /etc/init.d/orthanc ]; then
    if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
        systemctl disable --now orthanc >/dev/null 2>&1 || true
    else
        /etc/init.d/orthanc stop >/dev/null 2>&1 || true
        update-rc.d orthanc disable >/dev/null 2>&1 || true
    fi
fi

command -v Orthanc >/dev/null || { echo "Orthanc not on PATH after install" >&2; exit 1; }
for tool in echoscu storescu findscu movescu; do
    command -v "$tool" >/dev/null || { echo "$tool not on PATH after install" >&2; exit 1; }
done
