#!/bin/sh
# Generates checkpoints with real torch, then checks that test_zip re-emits each byte for byte.
# Usage: run_identity.sh PYTHON GEN_SCRIPT TEST_BINARY WORKDIR
py="$1"; gen="$2"; bin="$3"; dir="$4"
if ! "$py" -c 'import torch' >/dev/null 2>&1; then
    echo "skipping: $py cannot import torch"
    exit 77
fi
rm -rf "$dir" && mkdir -p "$dir" || exit 1
"$py" "$gen" "$dir" || exit $?
for f in "$dir"/x.pt "$dir"/ckpt.pth.tar "$dir"/a_much_longer_archive_name_to_shift_padding.pt; do
    "$bin" --identity "$f" || exit 1
done
