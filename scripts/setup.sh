#!/usr/bin/env bash
# Sets up what roomcast needs on a Debian machine that has only python3: Debian packages
# (venv support), then a virtual environment in .venv with the package. With --test also
# what the tests need: redis-server, chromium, the test tools (pytest, mypy, ruff,
# playwright, ...), Node.js and npm, and the browser client's JS tools (tests/js: npm ci).
# A stamp file per kind says what is installed already.
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
[ "${1:-}" = "--test" ] && want_test=1

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

need=()
python3 -c 'import ensurepip, venv' 2>/dev/null || need+=(python3-venv python3-pip)
if [ "$want_test" = 1 ]; then
  command -v redis-server >/dev/null || need+=(redis-server)
  command -v redis-cli >/dev/null || need+=(redis-tools)
  command -v chromium >/dev/null || need+=(chromium)
  command -v node >/dev/null || need+=(nodejs)
  command -v npm >/dev/null || need+=(npm)
fi
if [ "${#need[@]}" -gt 0 ]; then
  echo "setup: installing Debian packages: ${need[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
# Installed, and since pyproject.toml last changed?
fresh() { [ -f "$1" ] && [ ! pyproject.toml -nt "$1" ]; }
serve_stamp=.venv/.roomcast-installed
test_stamp=.venv/.roomcast-installed-test
if [ "$want_test" = 1 ]; then
  if ! fresh "$test_stamp"; then
    echo "setup: installing roomcast, its dependencies and the test tools into .venv"
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e '.[test]'
    touch "$serve_stamp" "$test_stamp"
  fi
elif ! fresh "$serve_stamp" && ! fresh "$test_stamp"; then
  echo "setup: installing roomcast and its dependencies into .venv (./scripts/test adds the test tools)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e .
  touch "$serve_stamp"
fi

# The browser client's tests type-check and bundle with tests/js's pinned tools.
js_stamp=tests/js/node_modules/.roomcast-installed
if [ "$want_test" = 1 ] && { [ ! -f "$js_stamp" ] || [ tests/js/package-lock.json -nt "$js_stamp" ]; }; then
  echo "setup: installing the JS test tools (npm ci in tests/js)"
  (cd tests/js && npm ci --no-audit --no-fund --loglevel=error)
  touch "$js_stamp"
fi
