#!/usr/bin/env bash
# `statedict convert` saves as torch.save would, never destroying what torch.save could not
# overwrite: a read-only target is refused (exit 3, the file named) and left as it was; a
# 255-byte file name saves and torch loads it; a dangling symbolic link gets its target created
# (the link kept, torch loads through it); a link to an existing file gets the file's content
# replaced, the link kept. The source checkpoint and every check of a result use real torch.
# Usage: save_rules.sh STATEDICT PYTHON WORKDIR   (exit 77 when PYTHON cannot import torch)
set -u
bin=$1; py=$2; dir=$3; fail=0
"$py" -c 'import torch' 2>/dev/null || { echo "SKIP: $py cannot import torch"; exit 77; }
rm -rf "$dir"; mkdir -p "$dir"
src=$dir/src.pt
"$py" - "$src" <<'EOF' || exit 1
import sys, torch
torch.save({'w': torch.arange(6.).reshape(2, 3), 'step': 7}, sys.argv[1])
EOF
# check_loads FILE: torch.load gives back the source's values
check_loads() {
  "$py" - "$1" <<'EOF' || { echo "FAIL: torch cannot load $1 back equal"; fail=$((fail+1)); }
import sys, torch
d = torch.load(sys.argv[1])
assert d['step'] == 7 and torch.equal(d['w'], torch.arange(6.).reshape(2, 3)), d
EOF
}
fail_if() { echo "FAIL: $*"; fail=$((fail+1)); }

# --- read-only target: refused, named, left as it was ----------------------------------------
shared=$dir/shared; mkdir -p "$shared"; chmod 0777 "$shared"
ro=$shared/readonly.pt
printf 'precious' > "$ro"; chmod 0444 "$ro"
if [ "$(id -u)" = 0 ]; then
  # root may write anything (so may torch.save as root): run as nobody, in a folder nobody may
  # write to, over a file nobody may not write
  chmod 0755 "$dir"; chmod 0644 "$src"
  as=(setpriv --reuid=65534 --regid=65534 --clear-groups)
else
  as=()
fi
"${as[@]}" "$bin" convert "$src" "$ro" >"$dir/out" 2>"$dir/err"; rc=$?
[ "$rc" = 3 ] || fail_if "convert over a read-only file: exit $rc, want 3"
grep -q "readonly.pt" "$dir/err" || fail_if "the refusal does not name the file: $(cat "$dir/err")"
grep -q "Permission denied" "$dir/err" || fail_if "the refusal does not say why: $(cat "$dir/err")"
[ "$(cat "$ro")" = precious ] || fail_if "the read-only file was changed"
[ "$(stat -c %a "$ro")" = 444 ] || fail_if "the read-only file's mode changed"
# the same user may save a new file beside it: the folder was never the reason
"${as[@]}" "$bin" convert "$src" "$shared/new.pt" 2>"$dir/err" || fail_if "convert into the shared folder: $(cat "$dir/err")"
check_loads "$shared/new.pt"
ls -a "$shared" | grep -q sdtmp && fail_if "a temporary file was left: $(ls -a "$shared")"

# --- a 255-byte name ---------------------------------------------------------------------------
long=$dir/$(printf 'n%.0s' $(seq 252)).pt
[ "${#long}" -eq $(( ${#dir} + 1 + 255 )) ] || fail_if "test bug: name length"
"$bin" convert "$src" "$long" 2>"$dir/err" || fail_if "convert to a 255-byte name: $(cat "$dir/err")"
check_loads "$long"
"$bin" convert --layout 2.x "$src" "$long" 2>"$dir/err" || fail_if "convert over a 255-byte name: $(cat "$dir/err")"
check_loads "$long"

# --- a dangling symbolic link: its target is created, the link kept ------------------------------
mkdir -p "$dir/sub"
ln -s sub/made.pt "$dir/dangling.pt"
"$bin" convert "$src" "$dir/dangling.pt" 2>"$dir/err" || fail_if "convert to a dangling link: $(cat "$dir/err")"
[ -L "$dir/dangling.pt" ] || fail_if "the dangling link was replaced"
[ "$(readlink "$dir/dangling.pt")" = sub/made.pt ] || fail_if "the link changed"
[ -f "$dir/sub/made.pt" ] && [ ! -L "$dir/sub/made.pt" ] || fail_if "the link's target was not created"
check_loads "$dir/sub/made.pt"
check_loads "$dir/dangling.pt"

# --- a link to an existing file: the file's content replaced, the link kept -----------------------
printf 'old' > "$dir/sub/existing.pt"; chmod 0640 "$dir/sub/existing.pt"
ln -s "$dir/sub/existing.pt" "$dir/abs.pt"
"$bin" convert "$src" "$dir/abs.pt" 2>"$dir/err" || fail_if "convert to a link: $(cat "$dir/err")"
[ -L "$dir/abs.pt" ] && [ "$(readlink "$dir/abs.pt")" = "$dir/sub/existing.pt" ] || fail_if "the link was replaced"
[ "$(stat -c %a "$dir/sub/existing.pt")" = 640 ] || fail_if "the target's mode changed"
check_loads "$dir/sub/existing.pt"

if [ "$fail" -ne 0 ]; then echo "$fail failure(s)"; exit 1; fi
echo "save rules: all checks passed"
