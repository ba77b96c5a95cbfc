#!/usr/bin/env bash
# Every hostile case through the CLI: `statedict ls` must exit 3 within 20 s and 2 GB of address
# space, print one error line naming the file, and no marker file may appear.
# Usage: cli_hostile.sh STATEDICT DIR
set -u
bin=$1; dir=$2; fail=0; n=0
while IFS=$'\t' read -r name expect; do
  n=$((n+1))
  out=$( (ulimit -v 2000000; timeout 20 "$bin" ls "$dir/$name.pt") 2>&1 >/dev/null); rc=$?
  if [ $rc -ne 3 ]; then echo "FAIL $name: exit $rc (want 3): $out"; fail=$((fail+1)); continue; fi
  case "$out" in *"$name.pt"*) ;; *) echo "FAIL $name: message does not name the file: $out"; fail=$((fail+1));; esac
done < "$dir/manifest.tsv"
if [ -e "$dir/PWNED" ]; then echo "FAIL: marker file exists - something ran"; fail=$((fail+1)); fi
echo "cli hostile: $n cases, $((n-fail)) refused with exit 3"
[ $fail -eq 0 ]
