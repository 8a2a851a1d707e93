#!/usr/bin/env bash
# Sets up everything Immersions needs, idempotently: system packages (apt, when root),
# a local virtual environment in .venv, the pinned torch first, then the project.
#   scripts/setup.sh app    what the app needs
#   scripts/setup.sh test   the app plus the test tools and real parts (Xvfb, JACK)
#   scripts/setup.sh bench  the tests plus the benchmarks' peers (make bench)
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-app}
torch_spec=${IMMERSIONS_TORCH:-torch==2.13.0}

app_packages=(libportaudio2 libsndfile1 libegl1 libgl1 libgl1-mesa-dri libxkbcommon-x11-0
  libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libxcb-image0 libxcb-render-util0
  libxcb-shape0 libxcb-randr0 libxcb-xkb1 libdbus-1-3 libfontconfig1)
test_packages=(xvfb jackd2 fluidsynth fluid-soundfont-gm sonic-pi-samples)

say() { printf 'setup: %s\n' "$*"; }

find_python() {
  for candidate in python3.13 python3.12 python3.11 python3; do
    if command -v "$candidate" >/dev/null &&
      "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      echo "$candidate"
      return
    fi
  done
  say "Python 3.11 or newer is needed (apt-get install python3 python3-venv)" >&2
  exit 1
}

install_system_packages() {
  if ! command -v dpkg-query >/dev/null; then
    say "not a Debian/Ubuntu system: install PortAudio, libsndfile, OpenGL (and for tests Xvfb, JACK) yourself; see README"
    return
  fi
  local wanted=("${app_packages[@]}")
  [ "$mode" != app ] && wanted+=("${test_packages[@]}")
  python3 -c 'import ensurepip' 2>/dev/null || wanted+=(python3-venv)
  local missing=()
  for package in "${wanted[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' ||
      missing+=("$package")
  done
  [ ${#missing[@]} -eq 0 ] && return
  if [ "$(id -u)" -ne 0 ]; then
    say "missing system packages; run this, then try again:" >&2
    echo "  sudo apt-get install --no-install-recommends ${missing[*]}" >&2
    exit 1
  fi
  say "installing system packages: ${missing[*]}"
  apt-get update -qq
  # jackd2 asks about real-time priority on install; the answer does not matter here.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

install_python_packages() {
  local python stamp extras want
  python=$(find_python)
  [ -x .venv/bin/python ] || { say "creating .venv"; "$python" -m venv .venv; }
  case "$mode" in
    test) extras='[dev]' ;;
    bench) extras='[dev,bench]' ;;  # the benchmarks' peers too
    *) extras='' ;;
  esac
  stamp=.venv/.immersions-setup
  want="$torch_spec $extras $(sha256sum pyproject.toml | cut -c1-16)"
  if [ -f "$stamp" ] && grep -qxF "$want" "$stamp"; then
    return
  fi
  # With no torch installed, an unpinned torch pulls the newest CUDA build (several GB).
  if ! .venv/bin/python -c 'import torch' 2>/dev/null; then
    say "installing $torch_spec"
    .venv/bin/pip install -q --disable-pip-version-check "$torch_spec"
  fi
  say "installing immersions$extras"
  .venv/bin/pip install -q --disable-pip-version-check -e ".$extras"
  # A test run's stamp covers an app run too, so keep both lines.
  { [ -f "$stamp" ] && cat "$stamp"; echo "$want"; } | sort -u >"$stamp.new"
  mv "$stamp.new" "$stamp"
}

install_system_packages
install_python_packages
