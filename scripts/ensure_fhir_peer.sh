#!/usr/bin/env bash
# Makes sure the real FHIR server of the FHIR REST connector's tests can run: Node.js and npm
# (Debian's packages where they are missing) and the exact npm packages pinned in
# tests/fhir_peer/package-lock.json (Medplum's FHIR router, jose), installed with `npm ci`
# whenever node_modules is missing or the lock file changed since the last install. Each
# test session starts its own server on a free loopback port (tests/fhir_server_peer.py).
set -euo pipefail
cd "$(dirname "$0")/.."

peer=tests/fhir_peer
stamp="$peer/node_modules/.package-lock.sha256"

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "Installing the FHIR test peer's runtime: nodejs npm" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends nodejs npm
fi

# @medplum/fhir-router 4.5 declares Node.js ^20.19 || >=22.12 (Debian 12 ships 18).
major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$major" -lt 20 ]; then
    echo "The FHIR test peer needs Node.js 20.19 or newer; $(command -v node) is $(node --version)." >&2
    exit 1
fi

wanted=$(sha256sum "$peer/package-lock.json" | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ]; then
    echo "Installing the FHIR test peer's npm packages (npm ci)" >&2
    (cd "$peer" && npm ci --no-audit --no-fund --loglevel=error)
    echo "$wanted" >"$stamp"
fi
