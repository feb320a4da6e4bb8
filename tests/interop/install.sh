#!/usr/bin/env bash
# Installs what the interop suite (tests/interop.rs) runs: the pinned node packages (oidc-provider,
# openid-client; package-lock.json) and Python `requests`. Needs node 20+, npm and python3 with pip.
set -euo pipefail
cd "$(dirname "$0")"
stamp=node_modules/.installed-from
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  npm ci --no-audit --no-fund --loglevel=error
  echo "$want" > "$stamp"
fi
python3 -c "import requests" 2>/dev/null || python3 -m pip install -q -r requirements.txt \
  || python3 -m pip install -q --break-system-packages -r requirements.txt
