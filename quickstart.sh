#!/bin/sh
# The README's Quick start, one script for both set-up commands:
#   sh quickstart.sh experiment [fcgi-experiment options]   the main job
#   sh quickstart.sh test [pytest options]                  the whole test suite
# It installs what it needs: a virtualenv in .venv with the package and its
# test/plot extras, and (when root) Debian's nginx-light and python3-venv,
# and gcc and python3-dev for the C scoreboard writer (without them the
# package runs on its pure-Python writer, about 5% slower on hello world).
# The tests also need the real parts users watch pools with: Debian's
# prometheus (with promtool), chromium and tmux.
set -eu
cd "$(dirname "$0")"
venv=${VENV:-.venv}
action=${1:-}
case "$action" in
    experiment|test) shift ;;
    *) echo "usage: sh quickstart.sh experiment|test [options]" >&2; exit 2 ;;
esac

apt_install() {
    if [ "$(id -u)" != 0 ]; then
        echo "quickstart: $1 is missing; install it: sudo apt-get install $2" >&2
        return 1
    fi
    echo "quickstart: installing $2 (apt-get)" >&2
    apt-get update -qq >/dev/null
    # shellcheck disable=SC2086  # $2 may name several packages
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $2 >/dev/null
}

has_python_headers() {
    python3 -c 'import os, sys, sysconfig
sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))'
}

has() {
    command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/bin/$1" ]
}

if ! has nginx; then
    apt_install nginx nginx-light
fi
if [ "$action" = test ]; then
    missing=
    for tool in prometheus:prometheus promtool:prometheus chromium:chromium tmux:tmux; do
        has "${tool%%:*}" || missing="$missing ${tool#*:}"
    done
    # shellcheck disable=SC2086  # one word per package
    [ -z "$missing" ] || apt_install "$missing" "$(echo $missing | tr ' ' '\n' | sort -u | tr '\n' ' ')" \
        || echo "quickstart: the tests that need$missing will fail" >&2
fi
if ! command -v cc >/dev/null 2>&1 || ! has_python_headers; then
    apt_install "a C compiler or Python.h" "gcc python3-dev" \
        || echo "quickstart: going on with the pure-Python scoreboard writer" >&2
fi
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv" 2>/dev/null || {
        rm -rf "$venv"
        apt_install "python3 -m venv" python3-venv
        python3 -m venv "$venv"
    }
fi
"$venv/bin/python" -m pip install -q --disable-pip-version-check -e '.[test,plot]' 2>&1 \
    | grep -v '^WARNING: Location' >&2 || true
"$venv/bin/python" -c 'import supervisor_fcgi_ext, flup, supervisor, pytest' || {
    echo "quickstart: installing the Python packages failed" >&2; exit 1; }

if [ "$action" = experiment ]; then
    exec "$venv/bin/fcgi-experiment" "$@"
fi
exec "$venv/bin/python" -m pytest "$@"
