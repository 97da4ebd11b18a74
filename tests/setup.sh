#!/usr/bin/env bash
# Sets up everything the test suite needs on a fresh Debian machine, idempotently:
#   - the virtual environment .venv with the package and its dev extra (every optional part
#     the tests exercise: Postgres, Dhara, the WebSocket server, voice, the bench plot);
#   - system packages: chromium (the browser tests drive Debian's chromium through
#     playwright's executable_path, so no browser is downloaded), Node.js and npm (pipecat's
#     JS client for the compatibility test), espeak-ng (speech for the voice tests);
#   - the npm packages of tests/js (from its lock file).
# Then run: .venv/bin/pytest -q
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
command -v npm >/dev/null 2>&1 || need_apt+=(nodejs npm)
command -v espeak-ng >/dev/null 2>&1 || need_apt+=(espeak-ng)
if [ ${#need_apt[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -q && $sudo apt-get install -y -q "${need_apt[@]}"
fi

python3 -m venv .venv
.venv/bin/pip install -q -e '.[dev]'

if [ -f tests/js/package-lock.json ] && [ ! -x tests/js/node_modules/.bin/esbuild ]; then
    (cd tests/js && npm ci --no-audit --no-fund --loglevel=error)
fi
