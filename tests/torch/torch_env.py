#!/usr/bin/python3
"""Records which torch generation the interop tests ran against.

usage: torch_env.py GEN OUTDIR

Run with generation GEN's python (tests/CMakeLists.txt). Writes OUTDIR/GEN.txt with the exact
versions of torch and its companions, prints them, and checks that the major.minor of torch is
GEN. Exit 0 recorded; 77 (skip) when torch is not importable here; 1 instead of the skip when
the environment variable SDICT_REQUIRE_TORCH is set, or when the version is not GEN's.
"""
import importlib
import os
import sys


def main(argv):
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    gen, outdir, require = argv[1], argv[2], bool(os.environ.get("SDICT_REQUIRE_TORCH"))
    try:
        import torch
    except Exception as e:  # ImportError, or a broken install
        print("%s: torch %s is not available here (%s)"
              % ("FAIL" if require else "SKIP", gen, e))
        return 1 if require else 77
    found = []
    for m in ("torch", "torchvision", "safetensors", "transformers", "numpy"):
        try:
            found.append("%s %s" % (m, importlib.import_module(m).__version__))
        except Exception:
            pass
    found.append("python %d.%d.%d" % sys.version_info[:3])
    line = ", ".join(found)
    print("torch generation %s: %s" % (gen, line))
    have = ".".join(torch.__version__.split("+")[0].split(".")[:2])
    if have != gen:
        print("FAIL: generation %s runs torch %s" % (gen, torch.__version__))
        return 1
    os.makedirs(outdir, exist_ok=True)
    with open(os.path.join(outdir, gen + ".txt"), "w") as f:
        f.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
