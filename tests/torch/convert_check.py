#!/usr/bin/python3
"""One convert test: `statedict convert FILE OUT` must give a file torch loads as it loads FILE.

usage: convert_check.py STATEDICT FILE WORKDIR

Converts FILE into WORKDIR under the same base name (so the archive folder name is the same),
then loads both files with torch.load(weights_only=True) into torch_dump.py's canonical form
and compares them with compare_dump.py's rules: same tree, dtypes, shapes, strides, storage
offsets, requires_grad, Parameters, element digests and storage sharing; only the container
format may differ (the output is always a zip). When torch 1.x reads a zip FILE, which torch 1.13
wrote, every record (data.pkl, the storages, version) must also be byte-identical: statedict
writes what 1.13's torch.save writes (the archive folder follows the file name, which differs
when the fixture was written under a temporary name).
Exit 0 agree, 1 disagree or the CLI failed, 77 (ctest skip) when torch cannot be imported.
"""
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def canonical(path):
    import torch_dump
    return json.loads(json.dumps(torch_dump.dump(path, weights_only=True)))


def check(statedict, path, workdir):
    import compare_dump
    import torch
    name = os.path.basename(path)
    os.makedirs(workdir, exist_ok=True)
    out = os.path.join(workdir, name)
    if os.path.abspath(out) == os.path.abspath(path):
        print("FAIL: WORKDIR must not be the folder of FILE")
        return 1
    r = subprocess.run([statedict, "convert", path, out], stderr=subprocess.PIPE)
    if r.returncode != 0:
        print("FAIL: statedict convert %s exited %d: %s"
              % (path, r.returncode, r.stderr.decode(errors="replace").strip()))
        return 1
    exp, act = canonical(path), canonical(out)
    if act["format"] != "zip":
        print("FAIL: convert wrote a %s file, not a zip" % act["format"])
        return 1
    act["format"] = exp["format"]
    try:
        compare_dump.compare(exp, act)
    except compare_dump.Mismatch as e:
        print("FAIL: %s and its conversion differ at %s" % (path, e))
        return 1
    print("convert: torch loads the same tree, values, strides and sharing from %s" % out)
    if exp["format"] == "zip" and torch.__version__.startswith("1."):
        ra, rb = records(path), records(out)
        if ra != rb or list(ra) != list(rb):
            diff = [n for n in sorted(set(ra) | set(rb)) if ra.get(n) != rb.get(n)]
            print("FAIL: records of %s differ from those torch %s wrote: %s"
                  % (out, torch.__version__, ", ".join(diff[:5])))
            return 1
        print("convert: every record byte-identical to torch %s's" % torch.__version__)
    return 0


def records(path):
    """Record name (without the archive folder, which follows the file name) -> bytes, in order."""
    import zipfile
    with zipfile.ZipFile(path) as z:
        return {n.split("/", 1)[1]: z.read(n) for n in z.namelist()}


def main(argv):
    if len(argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        import torch  # noqa: F401
    except ImportError as e:
        print("SKIP: %s cannot import torch (%s)" % (sys.executable, e))
        return 77
    if not os.path.exists(argv[2]):
        print("FAIL: %s does not exist (did the fixture setup test run?)" % argv[2])
        return 1
    return check(argv[1], argv[2], argv[3])


if __name__ == "__main__":
    sys.exit(main(sys.argv))
