#!/usr/bin/env bash
# Usage errors exit 2 with the usage on stderr; --help / help CMD / --version exit 0 on stdout;
# an unreadable input exits 3 with "statedict: " and the file name on stderr. Needs no torch.
# Usage: usage.sh STATEDICT WORKDIR
set -u
bin=$1; dir=$2; fail=0
mkdir -p "$dir"
expect() { # expect STATUS STREAM PATTERN -- ARGS...
  local want=$1 stream=$2 pat=$3; shift 4
  "$bin" "$@" >"$dir/out" 2>"$dir/err"; local rc=$?
  if [ "$rc" -ne "$want" ]; then echo "FAIL: statedict $*: exit $rc, want $want"; cat "$dir/err"; fail=$((fail+1)); return; fi
  if ! grep -q -- "$pat" "$dir/$stream"; then
    echo "FAIL: statedict $*: $stream lacks '$pat':"; cat "$dir/$stream"; fail=$((fail+1)); fi
}
expect 2 err "usage: statedict COMMAND"      --
expect 2 err "unknown command 'frobnicate'"  -- frobnicate
expect 2 err "usage: statedict ls"           -- ls
expect 2 err "unknown option '--bogus'"      -- ls --bogus x.pt
expect 2 err "statedict help ls"             -- ls --bogus x.pt
# a usage error is its cause, the usage line and where the options are: not the whole help
if [ "$(wc -l < "$dir/err")" -gt 3 ]; then echo "FAIL: usage error printed the whole help:"; cat "$dir/err"; fail=$((fail+1)); fi
expect 2 err "usage: statedict diff"         -- diff a.pt
expect 2 err "--rtol: 'abc' is not"          -- diff --rtol abc a.pt b.pt
expect 2 err "--atol needs a value"          -- diff a.pt b.pt --atol
expect 2 err "unknown option '--rtol'"       -- ls --rtol 1 a.pt
expect 2 err "usage: statedict show"         -- show a.pt
expect 2 err "usage: statedict convert"      -- convert a.pt
expect 2 err "--layout: '3' is not 1.13 or 2.x" -- convert --layout 3 a.pt b.pt
expect 2 err "--layout needs a value"        -- convert a.pt b.pt --layout
expect 2 err "unknown option '--layout'"     -- ls --layout 2.x a.pt
expect 0 out "--not-weights-only"            -- help convert
expect 2 err "usage: statedict scan"         -- scan
expect 2 err "unknown command 'bogus'"       -- help bogus
expect 0 out "usage: statedict COMMAND"      -- --help
expect 0 out "usage: statedict ls"           -- help ls
expect 0 out "usage: statedict diff"         -- diff --help
expect 0 out "--verify-crc"                  -- help dump
expect 0 out "^statedict [0-9]*\.[0-9]*\.[0-9]"  -- --version
expect 3 err "^statedict: unreadable: .*no-such-file.pt" -- ls "$dir/no-such-file.pt"
expect 3 err "^statedict: unreadable: .*no-such-file.pt" -- dump --json "$dir/no-such-file.pt"
expect 2 err "usage: statedict show"         -- show --metadata
expect 2 err "usage: statedict show"         -- show --metadata a.pt k extra
expect 2 err "unknown option '--metadata'"   -- ls --metadata a.pt
expect 0 out "--metadata"                    -- help show
expect 0 out "FILE\.\.\."                     -- help ls
expect 3 err "^statedict: unreadable: .*no-such-file.pt" -- dump "$dir/no-such-file.pt"
expect 3 err "^statedict: unreadable: .*no-such-file.pt" -- show --metadata "$dir/no-such-file.pt"
printf 'hello, not a checkpoint\n' > "$dir/text.pt"
expect 3 err "^statedict: .*text.pt"         -- ls "$dir/text.pt"
# several files: every one tried (both named on stderr), exit 3, both headers on stdout
expect 3 err "no-such-file.pt"               -- ls "$dir/text.pt" "$dir/no-such-file.pt"
expect 3 out "^==> .*no-such-file.pt <==$"   -- ls "$dir/text.pt" "$dir/no-such-file.pt"
expect 3 err "text.pt"                       -- ls "$dir/text.pt" "$dir/no-such-file.pt"
expect 3 out '"status": "unreadable"'        -- ls --json "$dir/no-such-file.pt" "$dir/text.pt"
expect 1 out "text.pt: FAILED"               -- verify "$dir/text.pt"
echo "cli usage: $fail failures"
[ "$fail" -eq 0 ]
