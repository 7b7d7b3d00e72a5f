#!/usr/bin/env bash
# Regenerate the Python stubs (and mypy stubs) from proto/. The only way to
# change the generated files: never edit them by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# The protoc plugins (mypy-protobuf) live beside the interpreter.
export PATH="$(dirname "$(command -v "$PY")"):$PATH"
protos=$(cd proto && find cloudnet -name '*.proto' | sort)
find proto/cloudnet \( -name '*_pb2*.py' -o -name '*_pb2*.pyi' \) -delete
"$PY" -m grpc_tools.protoc -Iproto \
  --python_out=proto --grpc_python_out=proto \
  --mypy_out=proto --mypy_grpc_out=proto $protos
# Every directory on the way is a package.
find proto/cloudnet -type d -exec sh -c 'test -f "$1/__init__.py" || : > "$1/__init__.py"' _ {} \;
echo "generated stubs for: $protos"
