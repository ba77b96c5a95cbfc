#!/usr/bin/python3
"""One interop test: torch.load and `statedict dump --json` must agree on FILE, and torch must
load statedict's rewrite of FILE as it loads FILE.

usage: interop_check.py STATEDICT FILE WORKDIR

1. Writes WORKDIR/<name>.torch.json (torch_dump.py: torch.load with weights_only=True, as torch
   2.6+ loads by default, falling back to weights_only=False only where torch's restricted
   loader refuses the content) and WORKDIR/<name>.statedict.json (the CLI), then runs
   compare_dump.py on them.
2. Round trip: `statedict convert FILE WORKDIR/<name>.converted.pt`, torch loads that, and its
   dump must equal torch's dump of FILE (values, dtypes, strides, sharing, Python types; the
   container may differ: a legacy file becomes a zip). When torch loaded FILE with
   weights_only=True it must load the rewrite that way too; when it did not, and statedict
   refuses to write content torch's restricted loader refuses, `convert --not-weights-only`.
3. For the fixtures gen_fixtures.SHOW_CHECK names, `statedict show` of every tensor must print
   what torch's str() prints (show_check.py).
Exit 0 agree, 1 disagree or the CLI failed, 77 (ctest skip) when torch cannot be imported. A
missing FILE is a failure, not a skip: the fixture-setup test that writes it ran with torch and
should have produced it.
"""
import contextlib
import io
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import gen_fixtures  # noqa: E402  (its SAME_AS table; importing it needs no torch)
import torch_dump as torch_dump_mod  # noqa: E402  (imports torch only when dumping)


def torch_available():
    """torch imported in this process (the dumps below run here: one torch start per test)."""
    try:
        import torch  # noqa: F401
    except ImportError as e:
        print("SKIP: %s cannot import torch (%s)" % (sys.executable, e))
        return False
    return True


def check(statedict, path, workdir):
    """Returns the exit status; prints what was compared and where the dumps are."""
    name = os.path.basename(path)
    os.makedirs(workdir, exist_ok=True)
    exp = os.path.join(workdir, name + ".torch.json")
    act = os.path.join(workdir, name + ".statedict.json")
    if not os.path.exists(path):
        print("FAIL: %s does not exist (did the fixture setup test run?)" % path)
        return 1
    # a file torch cannot load back is compared with torch's reading of its twin
    twin = gen_fixtures.SAME_AS.get(name)
    if twin:
        print("torch cannot load %s: comparing with torch's reading of %s" % (name, twin))
    weights_only = torch_dump(os.path.join(os.path.dirname(path), twin) if twin else path, exp)
    if weights_only is None:
        return 1
    with open(act, "wb") as out:
        r = subprocess.run([statedict, "dump", "--json", path], stdout=out,
                           stderr=subprocess.PIPE)
    if r.returncode != 0:
        print("FAIL: statedict dump --json %s exited %d: %s"
              % (path, r.returncode, r.stderr.decode(errors="replace").strip()))
        return 1
    r = subprocess.run([sys.executable, os.path.join(HERE, "compare_dump.py")] +
                       (["--ignore-container"] if twin else []) + [exp, act])
    print("(expected %s, actual %s)" % (exp, act))
    if r.returncode != 0:
        return 1
    if round_trip(statedict, path, workdir, exp, weights_only) != 0:
        return 1
    if name in gen_fixtures.SHOW_CHECK:
        r = subprocess.run([sys.executable, os.path.join(HERE, "show_check.py"), statedict, path])
        return 0 if r.returncode == 0 else 1
    return 0


def torch_dump(path, out_json):
    """torch's view of path into out_json (torch_dump.py's dump, in this process); returns
    whether it loaded with weights_only=True, or None (after saying why) when torch could not
    load it at all."""
    note = io.StringIO()
    try:
        with contextlib.redirect_stderr(note):
            tree = torch_dump_mod.dump(path, "prefer")
        with open(out_json, "w", encoding="utf-8") as out:
            json.dump(tree, out, ensure_ascii=False, allow_nan=False)
            out.write("\n")
    except Exception as e:  # torch's loader or the dump raised: the file is not loadable
        print("FAIL: torch_dump of %s raised %s: %s%s"
              % (path, type(e).__name__, str(e)[-2000:], note.getvalue().strip()[-2000:]))
        return None
    text = note.getvalue().strip()
    print(text.splitlines()[-1] if text else "torch_dump: %s: loaded" % path)
    return "loaded with weights_only=True" in text


def round_trip(statedict, path, workdir, exp, weights_only):
    name = os.path.basename(path)
    conv = os.path.join(workdir, name + ".converted.pt")
    conv_json = os.path.join(workdir, name + ".converted.torch.json")
    r = subprocess.run([statedict, "convert", path, conv], stderr=subprocess.PIPE)
    if r.returncode == 3 and not weights_only and b"--not-weights-only" in r.stderr:
        # content torch's restricted loader refuses: statedict keeps it only when asked to
        r = subprocess.run([statedict, "convert", "--not-weights-only", path, conv],
                           stderr=subprocess.PIPE)
    if r.returncode != 0:
        print("FAIL: statedict convert %s exited %d: %s"
              % (path, r.returncode, r.stderr.decode(errors="replace").strip()))
        return 1
    conv_weights_only = torch_dump(conv, conv_json)
    if conv_weights_only is None:
        return 1
    if weights_only and not conv_weights_only:
        print("FAIL: torch loads %s with weights_only=True but not statedict's rewrite %s"
              % (path, conv))
        return 1
    r = subprocess.run([sys.executable, os.path.join(HERE, "compare_dump.py"),
                        "--ignore-container", exp, conv_json])
    print("(round trip: expected %s, rewrite %s)" % (exp, conv_json))
    return 0 if r.returncode == 0 else 1


def main(argv):
    if len(argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    if not torch_available():
        return 77
    return check(argv[1], argv[2], argv[3])


if __name__ == "__main__":
    sys.exit(main(sys.argv))
