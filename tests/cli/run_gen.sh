#!/usr/bin/env bash
# Writes the CLI test checkpoints with real PyTorch; skips (77) without torch.
# Usage: run_gen.sh PYTHON DIR
set -u
py=$1; dir=$2
if ! "$py" -c 'import torch' >/dev/null 2>&1; then
  echo "skip: $py cannot import torch"
  exit 77
fi
rm -rf "$dir"
exec "$py" "$(dirname "$0")/gen_cli.py" "$dir"
