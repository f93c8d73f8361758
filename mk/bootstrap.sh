#!/usr/bin/env bash
# What the Makefile needs before uv exists, on a machine with only python3 and make.
#
#   mk/bootstrap.sh check-python PYTHON
#       PYTHON runs and is 3.11 or later.
#   mk/bootstrap.sh install-uv PYTHON VERSION DIR
#       uv==VERSION into DIR (DIR/bin/uv), with PYTHON's pip; when PYTHON has none
#       (Debian's and Ubuntu's python3), with the pip that ensurepip puts into a venv,
#       DIR-venv, removed afterwards.
#
# Every failure is one line on stderr, naming what to install.
set -euo pipefail

fail() {
  echo "make: $*" >&2
  exit 1
}

check_python() {
  local python=$1 version
  command -v "$python" >/dev/null 2>&1 \
    || fail "$python (PYTHON) not found: install python3, 3.11 or later, or name one with PYTHON=..."
  version=$("$python" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])' 2>/dev/null) \
    || fail "$python (PYTHON) does not run: install python3, 3.11 or later, or name one with PYTHON=..."
  "$python" -c 'import sys; sys.exit(sys.version_info[:2] < (3, 11))' \
    || fail "$python (PYTHON) is Python $version; Tandem needs 3.11 or later: install one, or name one with PYTHON=..."
}

install_uv() {
  local python=$1 version=$2 dir=$3
  local venv=$dir-venv
  local pip
  check_python "$python"
  if "$python" -m pip --version >/dev/null 2>&1; then
    pip=("$python" -m pip)
    echo "make: installing uv $version into $dir with $python's pip"
  else
    rm -rf "$venv"
    if ! "$python" -m venv "$venv" >/dev/null 2>&1 || ! "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
      rm -rf "$venv"
      fail "cannot install uv: $python has no pip, and its venv module cannot make one (no ensurepip): on Debian/Ubuntu, apt-get install python3-venv; elsewhere, use a python3 with pip or venv (PYTHON=...), or put uv $version on PATH"
    fi
    trap "rm -rf $(printf %q "$venv")" EXIT
    pip=("$venv/bin/python" -m pip)
    echo "make: installing uv $version into $dir with pip from a venv ($python has no pip)"
  fi
  rm -rf "$dir"
  "${pip[@]}" install --quiet --disable-pip-version-check --target "$dir" "uv==$version"
  [ -x "$dir/bin/uv" ] || fail "pip installed uv $version into $dir, but $dir/bin/uv is missing"
}

case "${1:-}" in
  check-python) [ $# -eq 2 ] && check_python "$2" && exit 0 ;;
  install-uv) [ $# -eq 4 ] && install_uv "$2" "$3" "$4" && exit 0 ;;
esac
fail "usage: mk/bootstrap.sh check-python PYTHON | install-uv PYTHON VERSION DIR"
