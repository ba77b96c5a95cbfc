#!/usr/bin/python3
"""The ZIP64 interop test: a > 4 GiB checkpoint written by torch, read by statedict.

usage: interop_big.py STATEDICT WORKDIR

Generates WORKDIR/big_zip64.pt (gen_fixtures.big_zip64: a 4.3e9-byte uint8 tensor between two
small ones, so a payload size and a later local-header offset both need ZIP64 fields), compares
`statedict dump --json` with torch.load as interop_check.py does, and always deletes the
checkpoint afterwards. Skips (exit 77, saying why) without torch or without ~10 GB free disk.
Needs about 9 GB of RAM (torch's tensor plus torch.load's copy).
"""
import os
import sys
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import gen_fixtures  # noqa: E402
import interop_check  # noqa: E402


def needs_zip64(path):
    """The file must really exercise ZIP64: a record of >= 4 GiB and a local header past 4 GiB
    (read from the central directory with Python's zipfile; no unpickling)."""
    with zipfile.ZipFile(path) as z:
        infos = z.infolist()
    size = max(i.file_size for i in infos)
    offset = max(i.header_offset for i in infos)
    if size < 2**32 or offset < 2**32:
        print("FAIL: %s does not need ZIP64 (largest record %d bytes, last header at %d)"
              % (path, size, offset))
        return False
    print("ok: largest record %d bytes, a local header at offset %d: ZIP64 needed"
          % (size, offset))
    return True


def main(argv):
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    if not interop_check.torch_available():
        return 77
    workdir = argv[2]
    os.makedirs(workdir, exist_ok=True)
    path = None
    try:
        path = gen_fixtures.big_zip64(workdir)
        if path is None:
            print("SKIP: not enough free disk for the ZIP64 checkpoint")
            return 77
        print("wrote %s (%d bytes)" % (path, os.path.getsize(path)))
        if not needs_zip64(path):
            return 1
        return interop_check.check(argv[1], path, workdir)
    finally:
        for p in (path, os.path.join(workdir, gen_fixtures.BIG_NAME + ".tmp")):
            if p and os.path.exists(p):
                os.remove(p)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
