#!/usr/bin/env bash
# Every hostile case through the CLI: `statedict ls` must exit 3 within 20 s and 2 GB of address
# space, print an error naming the file (and the manifest's optional third column, e.g.
# "ambiguous"), and no marker file may appear.
# Usage: cli_hostile.sh STATEDICT DIR [VMEM_KB]
# VMEM_KB 0 skips the address-space limit (sanitizer builds reserve terabytes of shadow memory).
set -u
bin=$1; dir=$2; vmem=${3:-2000000}; fail=0; n=0
limit() { if [ "$vmem" -gt 0 ]; then ulimit -v "$vmem"; fi; }
while IFS=$'\t' read -r name expect needle; do
  n=$((n+1))
  out=$( (limit; timeout 20 "$bin" ls "$dir/$name.pt") 2>&1 >/dev/null); rc=$?
  if [ $rc -ne 3 ]; then echo "FAIL $name: exit $rc (want 3): $out"; fail=$((fail+1)); continue; fi
  case "$out" in *"$name.pt"*) ;; *) echo "FAIL $name: message does not name the file: $out"; fail=$((fail+1)); continue;; esac
  case "$out" in *"$needle"*) ;; *) echo "FAIL $name: message does not say '$needle': $out"; fail=$((fail+1));; esac
done < "$dir/manifest.tsv"
if [ -e "$dir/PWNED" ]; then echo "FAIL: marker file exists - something ran"; fail=$((fail+1)); fi
echo "cli hostile: $n cases, $((n-fail)) refused with exit 3"
[ $fail -eq 0 ]
