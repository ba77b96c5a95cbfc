#!/bin/sh
# Runs a test script with the Python of one torch generation (scripts/torchenv), or skips.
#   run.sh GEN SCRIPT ARGS...
# Exit 77 (ctest's skip) with a message when that generation's torch cannot be imported
# (not set up, or no root for the chroot); otherwise prints the torch version and exits with
# the script's status.
gen=$1
shift
here=$(cd "$(dirname "$0")" && pwd)
torchenv=$here/../../scripts/torchenv
if ! version=$("$torchenv" python "$gen" -c 'import torch; print(torch.__version__)' 2>/dev/null); then
  echo "SKIP: torch $gen is not available: scripts/torchenv python $gen -c 'import torch' fails" \
       "(scripts/torchenv setup $gen makes it)"
  exit 77
fi
echo "torch generation $gen: torch $version"
exec "$torchenv" python "$gen" "$@"
