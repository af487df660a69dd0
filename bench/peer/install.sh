#!/usr/bin/env bash
# Installs the peer (npm `oidc-provider`, pinned in package-lock.json) into bench/peer/node_modules.
# Needs Node 20+ and npm; uses only the npm registry. Safe to run again.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
command -v node >/dev/null 2>&1 || { echo "install.sh: node is required (Node 20+)" >&2; exit 1; }
command -v npm >/dev/null 2>&1 || { echo "install.sh: npm is required" >&2; exit 1; }
npm ci --no-audit --no-fund --loglevel=error
node -e "import('oidc-provider').then(() => console.log('oidc-provider ' + require('./node_modules/oidc-provider/package.json').version + ' installed'))"
