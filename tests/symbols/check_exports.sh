#!/usr/bin/env bash
# Every symbol a shared library exports starts with sdict_ and is declared in a public header;
# internal helpers (sdict__*, sdict_nn__*) stay hidden.
# Usage: check_exports.sh INCLUDE_DIR LIB...
set -u
inc=$1; shift; fail=0; n=0
for lib in "$@"; do
  for sym in $(nm -D --defined-only "$lib" | awk 'NF == 3 && $2 ~ /[TDBR]/ {print $3}'); do
    n=$((n+1))
    case "$sym" in
      sdict_*__*|sdict__*) echo "FAIL: $lib exports internal symbol $sym"; fail=1 ;;
      sdict_*) grep -qw "$sym" "$inc"/*.h || { echo "FAIL: $lib exports $sym, not in include/"; fail=1; } ;;
      *) echo "FAIL: $lib exports $sym without the sdict_ prefix"; fail=1 ;;
    esac
  done
done
echo "exports: $n symbols checked"
[ "$n" -gt 50 ] && [ $fail -eq 0 ]
