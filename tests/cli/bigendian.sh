#!/usr/bin/env bash
# Load options on real big-endian files from ../shared/fixtures (pytorch/lstm.BE*.pt, an LSTM
# state_dict saved on s390x, see SOURCES.md): with a byteorder record the values come out
# byte-swapped; without one, --big-endian gives the same tensors. Skips (77) without the folder.
# Usage: bigendian.sh STATEDICT FIXTURES_DIR
set -u
bin=$1; fx=$2/pytorch; fail=0
if [ ! -f "$fx/lstm.BE.BOM.pt" ] || [ ! -f "$fx/lstm.BE.pt" ]; then
  echo "skip: $fx/lstm.BE*.pt not present"; exit 77
fi
"$bin" ls "$fx/lstm.BE.BOM.pt" | tail -1 | grep -q 'byteorder big$' || { echo "FAIL: ls BOM not big"; fail=1; }
"$bin" diff --big-endian "$fx/lstm.BE.BOM.pt" "$fx/lstm.BE.pt" >/dev/null
rc=$?; [ $rc -eq 0 ] || { echo "FAIL: diff --big-endian BOM vs no-BOM: exit $rc"; fail=1; }
"$bin" diff "$fx/lstm.BE.BOM.pt" "$fx/lstm.BE.pt" >/dev/null
rc=$?; [ $rc -eq 1 ] || { echo "FAIL: diff without --big-endian: exit $rc (want 1)"; fail=1; }
# SOURCES.md: first values of weight_ih_l0 about -0.1977, -0.3167, 0.1415, -0.2755
out=$("$bin" show "$fx/lstm.BE.BOM.pt" weight_ih_l0 | sed -n 2p)
case "$out" in "tensor([[-0.1977, -0.3167,  0.1415],"*) ;; *) echo "FAIL: show weight_ih_l0: $out"; fail=1;; esac
out=$("$bin" show --big-endian "$fx/lstm.BE.pt" weight_ih_l0 | sed -n 2p)
case "$out" in "tensor([[-0.1977, -0.3167,  0.1415],"*) ;; *) echo "FAIL: show --big-endian no-BOM: $out"; fail=1;; esac
echo "cli bigendian: $fail"
[ $fail -eq 0 ]
