#!/usr/bin/env bash
# Builds Debian's Abseil (the source package of the installed libabsl-dev, 20220623.1) with
# -fsanitize=thread into PREFIX, as shared libraries with Debian's sonames, for the ThreadSanitizer
# build: cmake -DREFORMER_SANITIZE=thread -DREFORMER_ABSEIL_PREFIX=PREFIX (README "Sanitizers").
# Every program of that build then loads these libraries instead of Debian's (DT_RPATH), gRPC
# included, so TSan sees every absl::Mutex/CondVar; with Debian's uninstrumented Abseil it cannot,
# and reports hundreds of races that are none.
#
#   scripts/build-tsan-abseil.sh PREFIX [JOBS]
#
# Needs: root the first time (adds a deb-src entry for the configured Debian mirror and runs
# apt-get update), dpkg-dev (dpkg-source), g++, cmake, ninja. Takes 2-4 minutes on 2 cores.
# Idempotent: does nothing when PREFIX already holds the build of this Abseil version.
set -euo pipefail
if [[ $# -lt 1 ]]; then
  echo "usage: $0 PREFIX [JOBS]" >&2
  exit 2
fi
prefix=$(realpath -m "$1")
jobs=${2:-$(nproc)}
version=$(dpkg-query -W -f='${source:Version}' libabsl-dev 2>/dev/null || true)
if [[ -z $version ]]; then
  echo "build-tsan-abseil: libabsl-dev is not installed (scripts/install-deps.sh)" >&2
  exit 1
fi
stamp=$prefix/.reformer-tsan-abseil
if [[ -f $stamp && $(cat "$stamp") == "$version" ]]; then
  echo "build-tsan-abseil: $prefix already holds Abseil $version built with TSan"
  exit 0
fi

# Debian configures binary packages only; the same mirror serves the sources.
sources=/etc/apt/sources.list.d/reformer-deb-src.sources
if ! apt-get source --print-uris -qq abseil >/dev/null 2>&1; then
  if [[ $(id -u) -ne 0 ]]; then
    echo "build-tsan-abseil: no deb-src entry for the Debian mirror; run once as root: sudo $0 $*" >&2
    exit 1
  fi
  uris=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n 1)
  uris=${uris:-http://deb.debian.org/debian}
  codename=$(. /etc/os-release && echo "$VERSION_CODENAME")
  cat > "$sources" <<SRC
# Added by reformer-serve scripts/build-tsan-abseil.sh: source packages from the configured mirror.
Types: deb-src
URIs: $uris
Suites: $codename $codename-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: ${uris%/debian}/debian-security
Suites: $codename-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  apt-get update -qq
fi
command -v dpkg-source >/dev/null || { echo "build-tsan-abseil: needs dpkg-dev" >&2; exit 1; }

work=$prefix.src
rm -rf "$work" "$prefix"
mkdir -p "$work"
start=$(date +%s)
# The installed version; else whatever the mirror has now (a later Debian update of the same
# upstream release keeps the sonames and ABI).
(cd "$work" && { apt-get source -qq "abseil=$version" || apt-get source -qq abseil; } >/dev/null 2>&1) || {
  echo "build-tsan-abseil: apt-get source abseil failed" >&2
  exit 1
}
src=$(find "$work" -mindepth 1 -maxdepth 1 -type d -name 'abseil-*' | head -n 1)
# Debian's flags (debian/rules: C++17, shared libraries; -O2 -g, no NDEBUG) plus ThreadSanitizer.
cmake -S "$src" -B "$work/build" -G Ninja -DCMAKE_BUILD_TYPE=None -DCMAKE_CXX_STANDARD=17 \
  -DBUILD_SHARED_LIBS=ON -DBUILD_TESTING=OFF -DCMAKE_INSTALL_PREFIX="$prefix" -DCMAKE_INSTALL_LIBDIR=lib \
  "-DCMAKE_CXX_FLAGS=-O2 -g -fsanitize=thread" -DCMAKE_SHARED_LINKER_FLAGS=-fsanitize=thread \
  > "$work/configure.log" 2>&1 || { tail -n 30 "$work/configure.log" >&2; exit 1; }
nice cmake --build "$work/build" -j "$jobs" > "$work/build.log" 2>&1 || { tail -n 30 "$work/build.log" >&2; exit 1; }
cmake --install "$work/build" > /dev/null
echo "$version" > "$stamp"
rm -rf "$work"
echo "build-tsan-abseil: Abseil $version with -fsanitize=thread in $prefix ($(( $(date +%s) - start )) s)"
