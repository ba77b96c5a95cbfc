#!/usr/bin/python3
"""One interop test: torch.load and `statedict dump --json` must agree on FILE.

usage: interop_check.py STATEDICT FILE WORKDIR

Writes WORKDIR/<name>.torch.json (torch_dump.py) and WORKDIR/<name>.statedict.json (the CLI),
then runs compare_dump.py on them. Exit 0 agree, 1 disagree or the CLI failed, 77 (ctest skip)
when torch cannot be imported. A missing FILE is a failure, not a skip: the fixture-setup test
that writes it ran with torch and should have produced it.
"""
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def torch_available():
    r = subprocess.run([sys.executable, "-c", "import torch"], capture_output=True, text=True)
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["?"])[-1]
        print("SKIP: %s cannot import torch (%s)" % (sys.executable, last))
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
    with open(exp, "wb") as out:
        r = subprocess.run([sys.executable, os.path.join(HERE, "torch_dump.py"),
                            "--prefer-weights-only", path], stdout=out)
    if r.returncode != 0:
        print("FAIL: torch_dump.py exited %d on %s" % (r.returncode, path))
        return 1
    with open(act, "wb") as out:
        r = subprocess.run([statedict, "dump", "--json", path], stdout=out,
                           stderr=subprocess.PIPE)
    if r.returncode != 0:
        print("FAIL: statedict dump --json %s exited %d: %s"
              % (path, r.returncode, r.stderr.decode(errors="replace").strip()))
        return 1
    r = subprocess.run([sys.executable, os.path.join(HERE, "compare_dump.py"), exp, act])
    print("(expected %s, actual %s)" % (exp, act))
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
