#!/usr/bin/python3
"""Strings kept exactly, and values convert must keep or refuse, against real torch.

usage: strings_convert_check.py STATEDICT WORKDIR

1. torch.save writes strs with lone surrogates ('\\ud800', '\\udfff', a high surrogate before
   a non-surrogate), control characters and non-BMP text, as keys and values. `statedict dump
   --json` must write each as Python's json.dumps writes it, so that json.loads reads back the
   very same strs (but for a high surrogate followed by a low one, which JSON itself cannot
   tell from the character they pair to), and
   `statedict convert` (both layouts) must write a file this torch loads back equal, under
   its default torch.load (weights_only=True from torch 2.6 on).
2. Values with Python types or attributes that a careless writer would flatten: bytearray,
   torch.Size, frozenset, a Parameter with requires_grad=False, a Parameter and a tensor
   carrying Python attributes. convert must keep every one of them (type, value, flags,
   attributes) -- with --not-weights-only for what torch's weights-only loader refuses
   (frozenset) -- or refuse with a message; it must never drop them silently.
Exit 0 all kept, 1 something changed or the CLI failed, 77 when torch cannot be imported.
"""
import json
import os
import subprocess
import sys

try:
    import torch
except ImportError:
    print("SKIP: torch cannot be imported")
    sys.exit(77)

statedict, work = sys.argv[1], sys.argv[2]
os.makedirs(work, exist_ok=True)
failures = []
NEW = tuple(int(x) for x in torch.__version__.split(".")[:2]) >= (2, 6)


def run(*args):
    return subprocess.run([statedict, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def load(path, weights_only):
    if tuple(int(x) for x in torch.__version__.split(".")[:2]) >= (1, 13):
        return torch.load(path, weights_only=weights_only)
    return torch.load(path)


# ---- 1. strings --------------------------------------------------------------------------------
STRS = {
    "\ud800": "lone high",
    "key\udfff": "\udfff",
    "pair": "\ud83d\ude00 joined, and \U0001F600 real",  # two separate surrogates vs one char
    "high then text": "\ud83dx",
    "controls": "\x1b[31m\x07\x00\u009b\n",
    "plain": "caf\u00e9",
}
src = os.path.join(work, "strings.pt")
torch.save({"strs": STRS, "list": list(STRS.values()), "t": torch.arange(3.0)}, src)

r = run("dump", "--json", src)
if r.returncode != 0:
    failures.append("dump --json %s: exit %d: %s" % (src, r.returncode, r.stderr.decode(errors="replace")))
else:
    try:
        doc = json.loads(r.stdout.decode("ascii"))  # ensure_ascii output: ASCII only
        root = {k["value"]: v for k, v in doc["root"]["items"]}
        got = {k["value"]: v["value"] for k, v in root["strs"]["items"]}
        # JSON cannot tell a high and a low surrogate apart from the character they pair to:
        # json.dumps writes both as "\ud83d\ude00" and json.loads joins them. The text must
        # be what json.dumps writes; the parsed str is then json.loads' reading of it.
        want = {k: json.loads(json.dumps(v)) for k, v in STRS.items()}
        if got != want:
            failures.append("dump --json strs differ: %r != %r" % (got, want))
        got_list = [v["value"] for v in root["list"]["items"]]
        if got_list != list(want.values()):
            failures.append("dump --json list differs: %r" % got_list)
        for v in STRS.values():
            if json.dumps(v) not in r.stdout.decode("ascii"):
                failures.append("dump --json does not write %s as json.dumps does" % json.dumps(v))
    except (ValueError, KeyError, TypeError) as e:
        failures.append("dump --json is not the expected JSON: %s: %r" % (e, r.stdout[:200]))

for layout in ("1.13", "2.x"):
    out = os.path.join(work, "strings_%s.pt" % layout.replace(".", "_"))
    r = run("convert", "--layout", layout, src, out)
    if r.returncode != 0:
        failures.append("convert --layout %s: exit %d: %s" % (layout, r.returncode, r.stderr.decode(errors="replace")))
        continue
    back = load(out, weights_only=NEW)
    if back["strs"] != STRS or back["list"] != list(STRS.values()) or not torch.equal(back["t"], torch.arange(3.0)):
        failures.append("convert --layout %s: torch loads %r" % (layout, back))

# ---- 2. values convert keeps ------------------------------------------------------------------
p_frozen = torch.nn.Parameter(torch.ones(2), requires_grad=False)
p_attr = torch.nn.Parameter(torch.zeros(3))
p_attr.note = "param attribute"
t_attr = torch.arange(4)
t_attr.tag = {"k": 1}
VALUES = {
    "bytearray": bytearray(b"\x00\x01\xff"),
    "size": torch.Size([2, 3]),
    "frozenset": frozenset({1, 2}),
    "p_frozen": p_frozen,
    "p_attr": p_attr,
    "t_attr": t_attr,
}
src2 = os.path.join(work, "values.pt")
torch.save(VALUES, src2)
orig = torch.load(src2) if not NEW else torch.load(src2, weights_only=False)


def same(a, b):
    if type(a) is not type(b):
        return "type %s != %s" % (type(a).__name__, type(b).__name__)
    if isinstance(a, torch.Tensor):
        if not torch.equal(a, b) or a.requires_grad != b.requires_grad:
            return "tensor %r != %r (requires_grad %s, %s)" % (a, b, a.requires_grad, b.requires_grad)
        if getattr(a, "__dict__", {}) != getattr(b, "__dict__", {}):
            return "attributes %r != %r" % (a.__dict__, b.__dict__)
        return None
    return None if a == b else "%r != %r" % (a, b)


for layout in ("1.13", "2.x"):
    out = os.path.join(work, "values_%s.pt" % layout.replace(".", "_"))
    r = run("convert", "--layout", layout, src2, out)
    if r.returncode == 0:
        failures.append("convert --layout %s kept a frozenset without --not-weights-only" % layout)
    elif b"frozenset" not in r.stderr:
        failures.append("convert --layout %s refused without naming the frozenset: %s" % (layout, r.stderr))
    r = run("convert", "--not-weights-only", "--layout", layout, src2, out)
    if r.returncode != 0:
        failures.append("convert --not-weights-only --layout %s: exit %d: %s"
                        % (layout, r.returncode, r.stderr.decode(errors="replace")))
        continue
    back = load(out, weights_only=False)
    for k, v in orig.items():
        why = same(v, back.get(k))
        if why:
            failures.append("convert --layout %s changed %s: %s" % (layout, k, why))

if failures:
    print("\n".join("FAIL: " + f for f in failures))
    sys.exit(1)
print("torch %s: strs with lone surrogates survive dump --json and convert; bytearray, "
      "torch.Size, frozenset, Parameter flags and attributes survive convert" % torch.__version__)
