#!/usr/bin/env bash
# One CLI test against real PyTorch: skips (77) without torch, then runs check_cli.py SUBTEST.
# Usage: run.sh PYTHON STATEDICT DIR SUBTEST
set -u
py=$1; bin=$2; dir=$3; sub=$4
if ! "$py" -c 'import torch' >/dev/null 2>&1; then
  echo "skip: $py cannot import torch"
  exit 77
fi
exec "$py" "$(dirname "$0")/check_cli.py" "$sub" "$bin" "$dir"
