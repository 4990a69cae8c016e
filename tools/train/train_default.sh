#!/bin/sh
# Re-trains the bundled model models/default exactly as it was trained (see MODEL_CARD.md):
#   tools/train/train_default.sh [extra train.py flags]      (from the repository root)
# Debian's python3-torch links the reference BLAS (slow: ~0.7 GFLOP/s); with Debian's
# libopenblas0-pthread the same run is ~15x faster. Installed, the alternatives system already
# gives it to torch; OPENBLAS_DIR may instead point at an extracted copy
# (apt-get download libopenblas0-pthread && dpkg-deb -x libopenblas0-pthread_*.deb DIR;
#  OPENBLAS_DIR=DIR/usr/lib/x86_64-linux-gnu/openblas-pthread). Results are deterministic for a
# given BLAS and thread count.
set -e
cd "$(dirname "$0")/../.."
if [ -n "$OPENBLAS_DIR" ]; then
  export LD_LIBRARY_PATH="$OPENBLAS_DIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
mkdir -p build-train
exec nice -n 10 /usr/bin/python3 tools/train/train.py --preset default --out models/default \
  --state build-train/train_state_default.pt --steps "${STEPS:-1450}" --resume "$@"
