#!/usr/bin/env bash
# Every hostile case through the CLI: `statedict ls` must exit 3 within 20 s and 2 GB of address
# space, print an error naming the file, and no marker file may appear.
# With MODE "inert", `statedict ls --inert` and `statedict dump --inert` instead: objects are data,
# so exit 0 (listed) or 3 (refused, naming the file), within the same bounds.
# Usage: cli_hostile.sh STATEDICT DIR [VMEM_KB [MODE]]
# VMEM_KB 0 skips the address-space limit (sanitizer builds reserve terabytes of shadow memory).
set -u
bin=$1; dir=$2; vmem=${3:-2000000}; mode=${4:-}; fail=0; n=0; listed=0
limit() { if [ "$vmem" -gt 0 ]; then ulimit -v "$vmem"; fi; }
while IFS=$'\t' read -r name expect want; do
  n=$((n+1))
  if [ "$mode" = inert ]; then
    for cmd in ls dump; do
      out=$( (limit; timeout 20 "$bin" $cmd --inert "$dir/$name.pt") 2>&1 >/dev/null); rc=$?
      if [ $rc -eq 0 ]; then [ $cmd = ls ] && listed=$((listed+1)); continue; fi
      if [ $rc -ne 3 ]; then echo "FAIL $name ($cmd --inert): exit $rc (want 0 or 3): $out"; fail=$((fail+1)); continue; fi
      case "$out" in *"$name.pt"*) ;; *) echo "FAIL $name ($cmd --inert): message does not name the file: $out"; fail=$((fail+1));; esac
    done
    continue
  fi
  out=$( (limit; timeout 20 "$bin" ls "$dir/$name.pt") 2>&1 >/dev/null); rc=$?
  if [ $rc -ne 3 ]; then echo "FAIL $name: exit $rc (want 3): $out"; fail=$((fail+1)); continue; fi
  case "$out" in *"$name.pt"*) ;; *) echo "FAIL $name: message does not name the file: $out"; fail=$((fail+1));; esac
  if [ -n "${want:-}" ]; then
    case "$out" in *"$want"*) ;; *) echo "FAIL $name: message lacks '$want': $out"; fail=$((fail+1));; esac
  fi
done < "$dir/manifest.tsv"
if [ -e "$dir/PWNED" ]; then echo "FAIL: marker file exists - something ran"; fail=$((fail+1)); fi
if [ "$mode" = inert ]; then
  echo "cli hostile --inert: $n cases, $listed listed as data, $fail failures"
else
  echo "cli hostile: $n cases, $((n-fail)) refused with exit 3"
fi
[ $fail -eq 0 ]
