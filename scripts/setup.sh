#!/usr/bin/env bash
# One-shot, idempotent set-up: Debian packages for QGIS, a venv from Debian's Python
# (so it sees QGIS's Python bindings), the pinned Python packages and the engine itself.
# Re-running it is fast: each step is skipped when its stamp is newer than its inputs.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv
APT_PACKAGES="python3-venv python3-qgis qgis-providers xvfb"

need_apt=0
for pkg in $APT_PACKAGES; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt=1
done
if [ "$need_apt" = 1 ]; then
  echo "setup: installing Debian packages: $APT_PACKAGES" >&2
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $APT_PACKAGES >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV from /usr/bin/python3 (with system site packages for QGIS)" >&2
  /usr/bin/python3 -m venv --system-site-packages "$VENV"
fi

# pip warns about local package indexes this image lists but lacks; keep errors, drop those.
pip_install() {
  "$VENV/bin/python" -m pip install -q "$@" 2>&1 | { grep -v "^WARNING: Location 'file:" || true; }
}

STAMP="$VENV/.tilelabel-installed"
if [ ! -f "$STAMP" ] || [ requirements.txt -nt "$STAMP" ] || [ setup.cfg -nt "$STAMP" ]; then
  echo "setup: installing Python packages into $VENV (first time: a few minutes)" >&2
  pip_install --upgrade pip "setuptools>=64" wheel
  pip_install -r requirements.txt
  pip_install --no-deps --no-build-isolation -e .
  touch "$STAMP"
fi
