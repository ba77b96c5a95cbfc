#!/usr/bin/python3
"""Per torch generation counts of a ctest run, from its JUnit file.

usage: summary.py JUNIT.xml VERSIONS_DIR

Tests registered per generation are named NAME@GEN (tests/CMakeLists.txt); VERSIONS_DIR holds
the GEN.txt files torch_env.py wrote with the exact versions. Prints one line per generation.
Always exits 0: ctest's own exit status says whether the run failed.
"""
import collections
import os
import sys
import xml.etree.ElementTree as ET


def main(argv):
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    counts = collections.OrderedDict()
    for case in ET.parse(argv[1]).getroot().iter("testcase"):
        name = case.get("name", "")
        if "@" not in name:
            continue
        gen = name.rsplit("@", 1)[1]
        c = counts.setdefault(gen, collections.Counter())
        status = case.get("status")
        c["passed" if status == "run" else "failed" if status == "fail" else "skipped"] += 1
    for gen in sorted(counts, key=lambda g: [int(x) for x in g.split(".")]):
        c = counts[gen]
        path = os.path.join(argv[2], gen + ".txt")
        versions = open(path).read().strip() if os.path.exists(path) else "versions not recorded"
        print("torch %s interop: passed %d, failed %d, skipped %d (%s)"
              % (gen, c["passed"], c["failed"], c["skipped"], versions))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
