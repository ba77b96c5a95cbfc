#!/usr/bin/python3
"""`statedict show FILE KEY` must print every tensor of FILE as torch's str() does.

usage: show_check.py STATEDICT FILE

Loads FILE with torch (weights_only=True, falling back to False as torch_dump.py does), walks
it as `statedict ls` names leaves (dict keys by their text, list and tuple items by index,
joined with "."), and for each tensor, quantized, sparse or nested tensor of at most 2000
elements compares the lines `show` prints after its header with str() of the tensor, which
for a Parameter starts with "Parameter containing:" (tensors torch cannot print, such as bits16,
are skipped). Exit 0 all equal, 1 a difference (the
first few are printed), 77 when torch cannot be imported. Only for files we made ourselves.
"""
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

LIMIT = 2000   # elements: bigger tensors are summarised by both, but slowly compared


def leaves(obj, path, out):
    import torch
    if isinstance(obj, torch.Tensor):
        out.append((path, obj))
    elif isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(k, (str, int)) and not isinstance(k, bool):
                leaves(v, "%s.%s" % (path, k) if path else str(k), out)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            leaves(v, "%s.%d" % (path, i) if path else str(i), out)


def size_of(t):
    if t.is_nested:
        return t.values().numel()
    if t.layout != __import__("torch").strided:
        return t._nnz() * 2
    return t.numel()


def main(argv):
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        import torch  # noqa: F401
    except ImportError as e:
        print("SKIP: torch is not importable (%s)" % e)
        return 77
    import torch_dump
    statedict, path = argv[1], argv[2]
    found = []
    leaves(torch_dump.load(path, "prefer"), "", found)
    bad = 0
    checked = 0
    for key, t in found:
        if size_of(t) > LIMIT or t.device.type == "meta":
            continue
        try:
            want = str(t)
        except (NotImplementedError, RuntimeError):  # torch cannot print bits16, uint4, ...
            continue
        r = subprocess.run([statedict, "show", path, key], capture_output=True)
        out = r.stdout.decode("utf-8", "replace")
        got = out.partition("\n")[2].rstrip("\n")
        checked += 1
        if r.returncode != 0 or got != want:
            bad += 1
            if bad <= 5:
                print("show %s %s (exit %d) printed:\n%s\ntorch's str():\n%s\n%s"
                      % (os.path.basename(path), key, r.returncode, got, want,
                         r.stderr.decode("utf-8", "replace").strip()))
    print("show_check: %s: %d tensors compared, %d differ" % (os.path.basename(path), checked, bad))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
