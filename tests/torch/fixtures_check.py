#!/usr/bin/python3
"""Checks of the statedict CLI on the real-world files in the shared fixtures folder.

usage: fixtures_check.py MODE STATEDICT FIXDIR REL [NAME...]

REL is a path relative to FIXDIR (as SOURCES.md names it). Exit 0 pass, 1 fail, 77 skip (the
folder or the file is absent; the torch comparison of `load` when torch is missing is skipped
inside the test, saying so, while the torch-free checks still run). MODEs:

  load        `statedict ls` exits 0; `statedict dump --json` exits 0 and holds exactly the
              tensors (count per dtype) that SOURCES.md reports torch 1.13 found; and when
              SOURCES.md says torch 1.13's weights_only load succeeded (run under torch 1.13),
              or when this torch 2.x's weights_only load succeeds (run under torch 2.x), the
              dump must agree with torch.load(weights_only=True) as in the interop tests
              (compare_dump.py).
  refuse N..  `statedict ls` exits 3 and stderr names one of the globals N (module.name;
              __builtin__.x and builtins.x count as the same global).
  crc-or-refuse N..   as refuse, but a CRC error, or refusing the archive's layout before any
              pickle is read (a zip whose records are not in one folder, as torch 2.x
              refuses it), are accepted reasons too: nothing from the file is unpickled.
  torchscript `statedict ls` exits 3 and stderr says TorchScript.
  reject      `statedict ls` exits 3 (not a PyTorch file, corrupt, encrypted).
  no-crash    `statedict ls` exits 0 or 3 (loads or is refused; never a crash or signal).
  lstm-be     the big-endian LSTM: see check_lstm_be().

The malicious files are never opened by Python here: only the statedict binary reads them, and
this script only parses SOURCES.md and the CLI's output. torch (weights_only=True, torch's
restricted unpickler) touches only the benign files, as SOURCES.md's own checks did.
"""
import ast
import hashlib
import json
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import compare_dump  # noqa: E402


def run(cmd):
    r = subprocess.run(cmd, capture_output=True)
    return r.returncode, r.stdout.decode("utf-8", "replace"), r.stderr.decode("utf-8", "replace")


def without_path(err, path):
    """stderr with the file's own name blanked, so that a name like malicious1_crc.zip cannot
    pass for the reason we look for."""
    for p in (os.path.abspath(path), path, os.path.basename(path)):
        err = err.replace(p, "<FILE>")
    return err


def show_cmd(cmd, rc, err):
    return "%s -> exit %d, stderr: %s" % (" ".join(cmd), rc, err.strip()[:500] or "(empty)")


def sources_entry(fixdir, rel):
    """The torch 1.13 check line of REL's section in SOURCES.md."""
    with open(os.path.join(fixdir, "SOURCES.md"), encoding="utf-8") as f:
        text = f.read()
    sec = text.split("### `%s`" % rel, 1)
    if len(sec) != 2:
        return None
    body = sec[1].split("\n### ", 1)[0]
    m = re.search(r"^\* torch 1\.13 check: (.*)$", body, re.M)
    return m.group(1) if m else None


def tensor_histogram(node, hist):
    t = node.get("type")
    if t == "tensor":
        hist[node["dtype"]] = hist.get(node["dtype"], 0) + 1
    elif t in ("list", "tuple", "set"):
        for x in node["items"]:
            tensor_histogram(x, hist)
    elif t == "dict":
        for k, v in node["items"]:
            tensor_histogram(k, hist)
            tensor_histogram(v, hist)
    return hist


def torch_available(py):
    return subprocess.run([py, "-c", "import torch"], capture_output=True).returncode == 0


def dump_json(statedict, path, extra=()):
    cmd = [statedict, "dump", "--json"] + list(extra) + [path]
    rc, out, err = run(cmd)
    if rc != 0:
        print("FAIL: " + show_cmd(cmd, rc, err))
        return None
    try:
        return json.loads(out)
    except ValueError as e:
        print("FAIL: %s printed invalid JSON: %s" % (" ".join(cmd), e))
        return None


def check_load(statedict, fixdir, rel, path):
    cmd = [statedict, "ls", path]
    rc, out, err = run(cmd)
    if rc != 0:
        print("FAIL: " + show_cmd(cmd, rc, err))
        return 1
    print("ok: statedict ls exit 0 (%d lines)" % len(out.splitlines()))
    doc = dump_json(statedict, path)
    if doc is None:
        return 1
    hist = tensor_histogram(doc["root"], {})
    line = sources_entry(fixdir, rel) or ""
    m = re.search(r"(\d+) tensors (\{[^}]*\})", line)
    if not m:
        print("FAIL: SOURCES.md has no tensor count for %s" % rel)
        return 1
    want = ast.literal_eval(m.group(2))
    if hist != want:
        print("FAIL: tensors per dtype: SOURCES.md (torch 1.13) %s, statedict dump %s"
              % (want, hist))
        return 1
    print("ok: %s tensors per dtype as SOURCES.md says: %s" % (m.group(1), want))
    if not torch_available(sys.executable):
        print("SKIPPED PART: %s cannot import torch; no torch comparison" % sys.executable)
        return 0
    import torch
    modern = not torch.__version__.startswith("1.")
    if not modern and not line.startswith("loaded OK"):
        print("note: torch 1.13 weights_only could not load this file; no torch comparison")
        return 0
    r = subprocess.run([sys.executable, os.path.join(HERE, "torch_dump.py"), "--weights-only",
                        path], capture_output=True)
    if r.returncode != 0 and modern:
        # torch 2.x's verdict is taken from the run itself: its allow-list is not 1.13's
        last = (r.stderr.decode(errors="replace").strip().splitlines() or ["?"])[-1]
        print("note: torch %s weights_only refuses this file (%s); no torch comparison"
              % (torch.__version__, last[:300]))
        return 0
    if r.returncode != 0:
        print("FAIL: torch_dump.py --weights-only: %s" % r.stderr.decode()[-500:])
        return 1
    try:
        compare_dump.compare(json.loads(r.stdout), doc)
    except compare_dump.Mismatch as e:
        print("FAIL: statedict dump vs torch.load(weights_only=True): MISMATCH at %s" % e)
        return 1
    print("ok: dump --json agrees with torch.load(weights_only=True)")
    return 0


def name_pattern(name):
    names = {name}
    for a, b in (("__builtin__.", "builtins."), ("builtins.", "__builtin__.")):
        if name.startswith(a):
            names.add(b + name[len(a):])
    return "|".join(r"(?<![\w.])%s(?![\w.])" % re.escape(n) for n in sorted(names))


def check_refuse(statedict, path, names, crc_ok=False):
    cmd = [statedict, "ls", path]
    rc, out, err = run(cmd)
    if rc != 3:
        print("FAIL: expected exit 3: " + show_cmd(cmd, rc, err))
        return 1
    err = without_path(err, path)
    pat = "|".join(name_pattern(n) for n in names)
    if re.search(pat, err) or (crc_ok and re.search(r"crc|not in a subdirectory", err, re.I)):
        print("ok: refused with exit 3: %s" % err.strip()[:300])
        return 0
    print("FAIL: exit 3 but stderr names none of %s%s: %s"
          % (names, " (nor a CRC or layout error)" if crc_ok else "", err.strip()[:500]))
    return 1


def check_exit(statedict, path, allowed, needle=None):
    cmd = [statedict, "ls", path]
    rc, out, err = run(cmd)
    if rc not in allowed:
        print("FAIL: expected exit %s: %s" % (" or ".join(map(str, allowed)),
                                             show_cmd(cmd, rc, err)))
        return 1
    if rc == 3 and not err.strip():
        print("FAIL: exit 3 without a message on stderr")
        return 1
    if needle and not re.search(needle, without_path(err, path), re.I):
        print("FAIL: stderr does not match /%s/: %s" % (needle, err.strip()[:500]))
        return 1
    print("ok: exit %d: %s" % (rc, err.strip()[:300]))
    return 0


# SOURCES.md: first values of weight_ih_l0, after byte-swapping.
LSTM_FIRST = (-0.1977, -0.3167, 0.1415, -0.2755)


def check_lstm_be(statedict, fixdir, path):
    """pytorch/lstm.BE.BOM.pt (byteorder record 'big') without options, and pytorch/lstm.BE.pt
    (no record) with --big-endian, must both give the byte-swapped values:
    1. `statedict show FILE weight_ih_l0` prints -0.1977, -0.3167, 0.1415, -0.2755 first;
    2. (with torch) every tensor's sha256 equals that of torch's own load (which ignores the
       record) byte-swapped per element, and the dump says byteorder "big"."""
    fails = 0
    nobom = os.path.join(os.path.dirname(path), "lstm.BE.pt")
    for f, extra in ((path, []), (nobom, ["--big-endian"])):
        cmd = [statedict, "show"] + extra + [f, "weight_ih_l0"]
        rc, out, err = run(cmd)
        if rc != 0:
            print("FAIL: " + show_cmd(cmd, rc, err))
            fails += 1
            continue
        nums = [float(x) for x in re.findall(r"[-+]?\d+\.\d+(?:[eE][-+]?\d+)?", out)][:4]
        if len(nums) < 4 or any(abs(a - b) > 6e-5 for a, b in zip(nums, LSTM_FIRST)):
            print("FAIL: %s: first values %s, SOURCES.md says %s\n%s"
                  % (" ".join(cmd), nums, LSTM_FIRST, out[:600]))
            fails += 1
        else:
            print("ok: %s starts %s" % (" ".join(cmd[1:]), nums))
    if not torch_available(sys.executable):
        print("SKIPPED PART: %s cannot import torch; no sha256 check" % sys.executable)
        return 1 if fails else 0
    import torch
    sd = torch.load(path, map_location="cpu", weights_only=True)
    want = {}
    for k, t in sd.items():
        a = t.contiguous().numpy().byteswap()        # torch 1.13 read big-endian bytes as native
        want[k] = hashlib.sha256(a.tobytes()).hexdigest()
    for f, extra in ((path, []), (nobom, ["--big-endian"])):
        doc = dump_json(statedict, f, extra)
        if doc is None:
            fails += 1
            continue
        got = {k["value"]: v.get("sha256") for k, v in doc["root"]["items"]}
        if got != want:
            print("FAIL: %s %s sha256 per key %s, byte-swapped torch load %s"
                  % (" ".join(extra), f, got, want))
            fails += 1
        else:
            print("ok: %s%s: all 4 tensors equal torch's values byte-swapped"
                  % (os.path.basename(f), " " + " ".join(extra) if extra else ""))
        if not extra and doc.get("byteorder") != "big":
            print("FAIL: %s: dump says byteorder %r, the file's record says big"
                  % (f, doc.get("byteorder")))
            fails += 1
    return 1 if fails else 0


def main(argv):
    if len(argv) < 5:
        print(__doc__, file=sys.stderr)
        return 2
    mode, statedict, fixdir, rel = argv[1:5]
    names = argv[5:]
    path = os.path.join(fixdir, rel)
    if not os.path.isdir(fixdir):
        print("SKIP: shared fixtures folder %s is absent" % fixdir)
        return 77
    if not os.path.exists(path):
        print("SKIP: %s is absent" % path)
        return 77
    if mode == "load":
        return check_load(statedict, fixdir, rel, path)
    if mode == "refuse":
        return check_refuse(statedict, path, names)
    if mode == "crc-or-refuse":
        return check_refuse(statedict, path, names, crc_ok=True)
    if mode == "torchscript":
        return check_exit(statedict, path, (3,), r"torch\s*script")
    if mode == "reject":
        return check_exit(statedict, path, (3,))
    if mode == "no-crash":
        return check_exit(statedict, path, (0, 3))
    if mode == "lstm-be":
        return check_lstm_be(statedict, fixdir, path)
    print("fixtures_check: unknown mode %s" % mode, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
