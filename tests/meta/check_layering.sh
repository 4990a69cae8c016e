#!/usr/bin/env bash
# Layering rules the build relies on (see README "Architecture"):
#  - nothing under engine/ includes a gRPC or protobuf header (Debian installs them in /usr/include,
#    so "not linking them" would not catch a stray include);
#  - server/batching/ includes neither gRPC/protobuf nor the engine;
#  - server/request/ (the wire-independent request layer) includes no gRPC or protobuf header and
#    nothing from server/grpc/ or server/http/;
#  - server/http/ includes nothing from server/grpc/ (both are adapters over server/request/);
#  - server/security/ (tokens, TLS files) includes no gRPC/protobuf/civetweb header and nothing from
#    server/grpc/ or server/http/ (both adapters use it).
# Usage: check_layering.sh <source-root>
set -u
root=${1:?usage: check_layering.sh <source-root>}
status=0
rpc='^[[:space:]]*#[[:space:]]*include[[:space:]]*[<"](grpc|grpcpp|grpc\+\+|google/protobuf)[/.]'
if hits=$(grep -rnE "$rpc" "$root/engine" --include='*.h' --include='*.hpp' --include='*.cc' --include='*.cpp' 2>/dev/null); then
  echo "FAIL: engine/ must not include gRPC or protobuf headers:"
  echo "$hits"
  status=1
fi
if [ -d "$root/server/batching" ]; then
  if hits=$(grep -rnE "$rpc|^[[:space:]]*#[[:space:]]*include[[:space:]]*\"engine/" "$root/server/batching" 2>/dev/null); then
    echo "FAIL: server/batching/ must include neither gRPC/protobuf nor the engine:"
    echo "$hits"
    status=1
  fi
fi
if [ -d "$root/server/request" ]; then
  if hits=$(grep -rnE "$rpc|^[[:space:]]*#[[:space:]]*include[[:space:]]*\"(server/grpc|server/http|proto)/" "$root/server/request" 2>/dev/null); then
    echo "FAIL: server/request/ must include no gRPC/protobuf header and nothing from server/grpc, server/http or proto:"
    echo "$hits"
    status=1
  fi
else
  echo "FAIL: server/request/ is missing"
  status=1
fi
if [ -d "$root/server/http" ]; then
  if hits=$(grep -rnE "^[[:space:]]*#[[:space:]]*include[[:space:]]*\"server/grpc/" "$root/server/http" 2>/dev/null); then
    echo "FAIL: server/http/ must not include server/grpc/ headers (use server/request/):"
    echo "$hits"
    status=1
  fi
fi
if [ -d "$root/server/security" ]; then
  if hits=$(grep -rnE "$rpc|^[[:space:]]*#[[:space:]]*include[[:space:]]*[<\"](civetweb|server/grpc/|server/http/)" "$root/server/security" 2>/dev/null); then
    echo "FAIL: server/security/ must include no gRPC/protobuf/civetweb header and nothing from server/grpc or server/http:"
    echo "$hits"
    status=1
  fi
fi
n=$(find "$root/engine" -name '*.h' -o -name '*.cc' | wc -l)
if [ "$n" -eq 0 ]; then
  echo "FAIL: no engine sources found under $root/engine"
  status=1
fi
[ $status -eq 0 ] && echo "OK: layering holds ($n engine files checked)"
exit $status
