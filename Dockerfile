# reformer-serve container image.
#
#   docker build -t reformer-serve .                      # or: podman build --isolation chroot -t reformer-serve .
#   docker run --rm -p 8001:8001 -p 8000:8000 reformer-serve
#
# Build arguments:
#   BUILD_BASE   image of the build stage        (default debian:bookworm)
#   BASE         image of the runtime stage      (default debian:bookworm-slim)
#   BUILD_TESTS  ON = also build and run the C++ test suite in the build stage (default OFF)
#   JOBS         parallel compile jobs           (default 2)
#   MODEL_DIR    model directory copied in as the default model (default models/default)
# deploy/test-image.sh builds this with podman from a debootstrap'd bookworm base and checks it end to end.
# Runs on any x86-64-v2 CPU: the engine chooses AVX-512, AVX2 or baseline kernels at start-up (docs/isa.md).

ARG BUILD_BASE=debian:bookworm
ARG BASE=debian:bookworm-slim

# --- Build stage: compilers and -dev packages live only here ----------------------------------------------------
FROM ${BUILD_BASE} AS build
ARG BUILD_TESTS=OFF
ARG JOBS=2
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      g++ cmake ninja-build pkg-config \
      libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler grpc-proto \
      libdnnl-dev ocl-icd-opencl-dev libabsl-dev prometheus-cpp-dev \
      libsentencepiece-dev nlohmann-json3-dev libssl-dev \
 && if [ "${BUILD_TESTS}" = "ON" ]; then \
      apt-get install -y --no-install-recommends libgtest-dev libgmock-dev libbenchmark-dev \
        python3 python3-grpcio python3-grpc-tools python3-protobuf python3-numpy openssl; \
    fi \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
# Sources of the server first: edits under tests/ (or to the model) do not invalidate the compile layer.
COPY CMakeLists.txt ./
COPY cmake/ cmake/
COPY proto/ proto/
COPY engine/ engine/
COPY server/ server/
COPY tools/ tools/
RUN cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DREFORMER_BUILD_TESTS=OFF -DREFORMER_BUILD_BENCHMARKS=OFF \
 && cmake --build build -j "${JOBS}" --target reformer-server
# Optional: the whole C++ test suite (deploy checks excluded: they need node/prometheus, not part of the image).
COPY tests/ tests/
RUN if [ "${BUILD_TESTS}" = "ON" ]; then \
      cmake -S . -B build -DREFORMER_BUILD_TESTS=ON \
      && cmake --build build -j "${JOBS}" \
      && ctest --test-dir build --output-on-failure -j "${JOBS}" -LE deploy; \
    fi

# Collect the binary and the Debian packages that provide its shared libraries: the runtime stage installs
# exactly those (runtime libraries only; a -dev package here is a build error).
RUN mkdir -p /out/bin \
 && cp build/bin/reformer-server /out/bin/ \
 && strip --strip-unneeded /out/bin/reformer-server \
 && for lib in $(ldd /out/bin/reformer-server | awk '$2 == "=>" && $3 ~ /^\// {print $3}'); do \
      dpkg -S "${lib}" 2>/dev/null || dpkg -S "$(realpath "${lib}")" 2>/dev/null \
        || dpkg -S "$(echo "${lib}" | sed 's#^/usr/lib/#/lib/#')" 2>/dev/null \
        || { echo "no package owns ${lib}" >&2; exit 1; }; \
    done | cut -d: -f1 | sort -u >/out/runtime-packages.txt \
 && echo "runtime packages:" $(cat /out/runtime-packages.txt) \
 && if grep -E -- '-dev$' /out/runtime-packages.txt; then echo "a -dev package in the runtime set" >&2; exit 1; fi

# --- Runtime stage: bookworm-slim + runtime libraries, non-root ---------------------------------------------------
FROM ${BASE} AS runtime
ARG MODEL_DIR=models/default
ENV DEBIAN_FRONTEND=noninteractive
COPY --from=build /out/runtime-packages.txt /tmp/runtime-packages.txt
RUN apt-get update \
 && xargs -a /tmp/runtime-packages.txt apt-get install -y --no-install-recommends \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb /tmp/runtime-packages.txt \
 && groupadd --system --gid 10001 reformer \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin reformer

COPY --from=build /out/bin/reformer-server /opt/reformer-serve/bin/reformer-server
# The server finds its default model here when neither --model_dir nor REFORMER_MODEL_DIR is set.
COPY ${MODEL_DIR}/ /opt/reformer-serve/models/default/

LABEL org.opencontainers.image.title="reformer-serve" \
      org.opencontainers.image.description="gRPC (KServe v2) server for Reformer language models on CPUs"
ENV REFORMER_GRPC_PORT=8001 \
    REFORMER_HTTP_PORT=8000
# 8001: gRPC (KServe v2, reformer.v1, grpc.health.v1, reflection). 8000: HTTP /metrics, /healthz, /readyz, /v2.
EXPOSE 8001 8000
USER 10001:10001
WORKDIR /opt/reformer-serve
# The server is PID 1: it handles SIGTERM itself (readiness off, drain, exit 0); no shell in between.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/opt/reformer-serve/bin/reformer-server"]
