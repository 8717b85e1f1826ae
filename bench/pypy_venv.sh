#!/bin/sh
# A PyPy virtualenv with notifier installed, for bench/targets/notifier-pypy.toml
# (`make bench PYPY=1`).  Usage: bench/pypy_venv.sh [VENV]   (default /tmp/pypy-venv;
# the profile expects that path).
#
# Debian 12's pypy3 is PyPy 7.3.11, a Python 3.9, while notifier declares
# python_requires >= 3.11. Its code runs on 3.9 except for one import, the
# standard library's tomllib (3.11); so this virtualenv, and only it, gets:
#   - notifier installed with --ignore-requires-python;
#   - a module tomllib.py that re-exports tomli (the same parser, from PyPI);
#   - binary wheels only for cryptography and cffi: their newest releases have
#     no PyPy 3.9 wheels, and building them needs Rust crates from a registry
#     that is not reachable here, so pip settles on the last releases with
#     PyPy 3.9 wheels (and the autobahn/Twisted releases that accept them);
#   - autobahn without its optional CFFI helpers (AUTOBAHN_USE_NVX=0: they
#     need PyPy's C headers, and the server does not need them to send).
# The project itself is reinstalled on every call, so the measured code is
# the working tree's.
set -eu
VENV=${1:-/tmp/pypy-venv}
ROOT=$(cd "$(dirname "$0")/.." && pwd)

missing=""
command -v pypy3 >/dev/null 2>&1 || missing="pypy3"
dpkg -s pypy3-venv >/dev/null 2>&1 || missing="$missing pypy3-venv"
if [ -n "$missing" ]; then
    echo "installing$missing"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing
fi
[ -x "$VENV/bin/python" ] || pypy3 -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
export AUTOBAHN_USE_NVX=0
if [ ! -f "$VENV/.deps-installed" ]; then
    $PIP install -q --prefer-binary --only-binary=cryptography,cffi --ignore-requires-python tomli "$ROOT"
    touch "$VENV/.deps-installed"
fi
$PIP install -q --no-deps --force-reinstall --ignore-requires-python "$ROOT"
SITE=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
if ! "$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    printf '%s\n' '"""tomllib for Python < 3.11 (this benchmark virtualenv only): the same parser, tomli."""' \
        'from tomli import TOMLDecodeError, load, loads  # noqa: F401' > "$SITE/tomllib.py"
fi
"$VENV/bin/python" -c 'import notifier.tap, notifier.service; import sys; print("PyPy virtualenv ready:", sys.executable, sys.version.split()[0])'
[ -x "$VENV/bin/twistd" ]
