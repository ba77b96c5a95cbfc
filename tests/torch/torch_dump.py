#!/usr/bin/python3
"""Print what torch.load sees in FILE, in the canonical JSON of `statedict dump --json`.

usage: torch_dump.py [--weights-only] FILE     (exit 77 when torch is not importable)

--weights-only loads with torch.load(weights_only=True), torch's restricted unpickler: used
for the third-party benign fixtures. Without it, weights_only=False (our own files only).

The form (issue 2, "The CLI"): {"format": "zip"|"legacy"|"tar", "byteorder": "little"|"big",
"root": NODE}; NODE is none/bool/int/float/str/bytes/list/tuple/set/dict/tensor as documented
there. Two things statedict prints cannot be had from torch.load and are stood in for:
  - "storage": the storage key string in the file. torch.load only keeps which tensors share a
    storage, so we print "torch:<StorageImpl pointer>"; compare_dump.py compares sharing groups
    (first-seen order of the storage string), not the strings.
  - "format"/"byteorder": read from the file itself (first bytes; the zip's byteorder record).

ONLY for files we made ourselves: torch.load(weights_only=False) runs pickled code. Never point
this at the malicious fixtures.
"""
import collections
import hashlib
import json
import math
import sys
import tarfile
import zipfile


def float_text(x):
    """C99 %a spelling as far as it matters: compare_dump.py re-parses both sides with
    float.fromhex, so Python's float.hex() spelling is fine; nan/inf spelled as in the spec."""
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return x.hex()


def tensor_bytes(t):
    """Elements in C-contiguous order, little-endian (bool 1 byte, complex real then imag)."""
    import torch
    # flat first: numpy takes at most 32 dimensions, torch any number (same C-order bytes)
    t = t.detach().contiguous().reshape(-1)
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)            # numpy has no bfloat16; the bits are what we hash
    a = t.numpy()
    if a.dtype.byteorder == ">" or (a.dtype.byteorder == "=" and sys.byteorder == "big"):
        a = a.byteswap().view(a.dtype.newbyteorder("<"))
    # A flat uint8 view hashes in place: no copy even for the 4.3 GB ZIP64 fixture.
    return memoryview(a.reshape(-1).view("u1"))


def tensor_node(t):
    import torch
    # StorageImpl pointer: one per storage, stable while the tensors live, unique even for
    # empty storages (whose data pointers are all 0). Views share their base's StorageImpl.
    st = t.storage()
    impl = st._cdata if hasattr(st, "_cdata") else st._storage._cdata
    return collections.OrderedDict([
        ("type", "tensor"),
        ("dtype", str(t.dtype).replace("torch.", "")),
        ("shape", list(t.shape)),
        ("stride", list(t.stride())),
        ("storage_offset", t.storage_offset()),
        ("requires_grad", bool(t.requires_grad)),
        ("parameter", isinstance(t, torch.nn.Parameter)),
        ("storage", "torch:%d" % impl),
        ("sha256", hashlib.sha256(tensor_bytes(t)).hexdigest()),
    ])


def node(v):
    import torch
    if v is None:
        return {"type": "none"}
    if isinstance(v, bool):
        return {"type": "bool", "value": v}
    if isinstance(v, int):
        return {"type": "int", "value": str(v)}
    if isinstance(v, float):
        return {"type": "float", "value": float_text(v)}
    if isinstance(v, str):
        return {"type": "str", "value": v}
    if isinstance(v, (bytes, bytearray)):
        return {"type": "bytes", "hex": bytes(v).hex()}
    if isinstance(v, torch.Tensor):
        return tensor_node(v)
    if isinstance(v, list):
        return {"type": "list", "items": [node(x) for x in v]}
    if isinstance(v, tuple):               # includes torch.Size
        return {"type": "tuple", "items": [node(x) for x in v]}
    if isinstance(v, (set, frozenset)):
        return {"type": "set", "items": [node(x) for x in v]}
    if isinstance(v, dict):
        out = collections.OrderedDict([
            ("type", "dict"),
            ("ordered", isinstance(v, collections.OrderedDict)),
            ("items", [[node(k), node(x)] for k, x in v.items()])])
        attrs = getattr(v, "__dict__", None)
        if attrs:
            out["attrs"] = [[k, node(x)] for k, x in attrs.items()]
        return out
    raise TypeError("torch_dump: no canonical form for %s" % type(v).__name__)


def container_info(path):
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic == b"PK\x03\x04":
        byteorder = "little"
        with zipfile.ZipFile(path) as z:
            for n in z.namelist():
                if n.split("/", 1)[-1] == "byteorder":
                    byteorder = z.read(n).decode("ascii").strip()
        return "zip", byteorder
    if tarfile.is_tarfile(path):
        return "tar", "little"
    return "legacy", "little"


def dump(path, weights_only=False):
    import torch
    fmt, byteorder = container_info(path)
    obj = torch.load(path, map_location="cpu", weights_only=weights_only)
    return collections.OrderedDict([("format", fmt), ("byteorder", byteorder),
                                    ("root", node(obj))])


def main(argv):
    args = argv[1:]
    weights_only = bool(args) and args[0] == "--weights-only"
    if weights_only:
        args = args[1:]
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        import torch  # noqa: F401
    except ImportError as e:
        print("torch_dump: torch is not importable (%s): skipping" % e)
        return 77
    json.dump(dump(args[0], weights_only), sys.stdout, ensure_ascii=False)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
