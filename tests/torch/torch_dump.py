#!/usr/bin/python3
"""Print what torch.load sees in FILE, in the canonical JSON of `statedict dump --json`.

usage: torch_dump.py [--weights-only | --prefer-weights-only] FILE
       (exit 77 when torch is not importable)

--weights-only loads with torch.load(weights_only=True), torch's restricted unpickler: used
for the third-party benign fixtures. --prefer-weights-only (our own files) tries that first, as
torch 2.6+ does by default, and falls back to weights_only=False only when torch's restricted
unpickler refuses the content (floats in torch 1.13, numpy payloads, pickle protocols 4 and 5,
torch 1.13's sparse CSR function), saying on stderr which load was used and why. Without
either, weights_only=False (our own files only).

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
    """A float as the JSON schema writes it: a JSON number (json.dumps writes Python's repr,
    which reads back exactly) when finite, "nan", "inf" or "-inf" otherwise."""
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return float(x)


def int_value(v):
    """An int as the JSON schema writes it: a JSON number within +-2^53, its exact decimal
    text past that."""
    v = int(v)
    return v if -2**53 <= v <= 2**53 else str(v)


# dtypes numpy cannot hold: hashed through a same-size integer view of their bits
BITS_VIEW = {"bfloat16": "int16", "complex32": "int32", "bcomplex32": "int32",
             "float8_e4m3fn": "uint8", "float8_e5m2": "uint8", "float8_e4m3fnuz": "uint8",
             "float8_e5m2fnuz": "uint8", "float8_e8m0fnu": "uint8", "float4_e2m1fn_x2": "uint8",
             "bits8": "uint8", "bits16": "int16", "bits1x8": "uint8", "bits2x4": "uint8",
             "bits4x2": "uint8", "uint16": "int16", "uint32": "int32", "uint64": "int64"}


def dtype_name(d):
    return str(d).replace("torch.", "")


def tensor_bytes(t):
    """Elements in C-contiguous order, little-endian (bool 1 byte, complex real then imag),
    with the conjugate and negative bits applied; quantized tensors as their int_repr()."""
    import torch
    t = t.detach()
    if t.is_quantized:
        t = t.int_repr()
    if t.is_conj():
        t = t.resolve_conj()
    if t.is_neg():
        t = t.resolve_neg()
    # flat first: numpy takes at most 32 dimensions, torch any number (same C-order bytes)
    t = t.contiguous().reshape(-1)
    name = dtype_name(t.dtype)
    if name in BITS_VIEW:
        if t.numel() == 0:
            return memoryview(b"")
        t = t.view(getattr(torch, BITS_VIEW[name]))
    elif t.element_size() == 1 and not t.dtype.is_floating_point and t.dtype not in (
            torch.bool, torch.int8, torch.uint8):
        t = t.view(torch.uint8)           # uint1..7, int1..7: one byte each
    a = t.numpy()
    if a.dtype.byteorder == ">" or (a.dtype.byteorder == "=" and sys.byteorder == "big"):
        a = a.byteswap().view(a.dtype.newbyteorder("<"))
    # A flat uint8 view hashes in place: no copy even for the 4.3 GB ZIP64 fixture.
    return memoryview(a.reshape(-1).view("u1"))


SPARSE_LAYOUTS = ("sparse_coo", "sparse_csr", "sparse_csc", "sparse_bsr", "sparse_bsc")


def attrs_of(t):
    """Python attributes a tensor carries (its __dict__), as [name, NODE] pairs."""
    d = getattr(t, "__dict__", None) or {}
    return [[k, node(x)] for k, x in d.items()]


def sparse_node(t):
    import torch
    layout = str(t.layout).replace("torch.", "")
    out = collections.OrderedDict([
        ("type", "sparse"), ("layout", layout), ("size", list(t.shape)),
        ("requires_grad", bool(t.requires_grad)),
        ("parameter", isinstance(t, torch.nn.Parameter))])
    if layout == "sparse_coo":
        out["is_coalesced"] = bool(t.is_coalesced())
        out["indices"] = node(t._indices())
    elif layout in ("sparse_csr", "sparse_bsr"):
        out["indices"] = node(t.crow_indices())
        out["plain_indices"] = node(t.col_indices())
    else:
        out["indices"] = node(t.ccol_indices())
        out["plain_indices"] = node(t.row_indices())
    out["values"] = node(t._values() if layout == "sparse_coo" else t.values())
    a = attrs_of(t)
    if a:
        out["attrs"] = a
    return out


def nested_node(t):
    import torch
    out = collections.OrderedDict([
        ("type", "nested"), ("requires_grad", bool(t.requires_grad)),
        ("parameter", isinstance(t, torch.nn.Parameter)),
        ("buffer", node(t.values())), ("sizes", node(t._nested_tensor_size())),
        ("strides", node(t._nested_tensor_strides())),
        ("storage_offsets", node(t._nested_tensor_storage_offsets()))])
    a = attrs_of(t)
    if a:
        out["attrs"] = a
    return out


def quantizer_node(t):
    import torch
    q = t.qscheme()
    out = collections.OrderedDict([("qscheme", str(q).replace("torch.", ""))])
    if q == torch.per_tensor_affine:
        out["scale"] = float_text(t.q_scale())
        out["zero_point"] = t.q_zero_point()
    else:
        out["scales"] = node(t.q_per_channel_scales())
        out["zero_points"] = node(t.q_per_channel_zero_points())
        out["axis"] = t.q_per_channel_axis()
    return out


def tensor_node(t):
    import torch
    layout = str(t.layout).replace("torch.", "")
    if layout in SPARSE_LAYOUTS:
        return sparse_node(t)
    if t.is_nested:
        return nested_node(t)
    # StorageImpl pointer: one per storage, stable while the tensors live, unique even for
    # empty storages (whose data pointers are all 0). Views share their base's StorageImpl.
    meta = t.device.type == "meta"
    impl = t.untyped_storage()._cdata if hasattr(t, "untyped_storage") else None
    if impl is None:
        st = t.storage()
        impl = st._cdata if hasattr(st, "_cdata") else st._storage._cdata
    out = collections.OrderedDict([
        ("type", "tensor"),
        ("dtype", dtype_name(t.dtype)),
        ("shape", list(t.shape)),
        ("stride", list(t.stride())),
        ("storage_offset", t.storage_offset()),
        ("requires_grad", bool(t.requires_grad)),
        ("parameter", isinstance(t, torch.nn.Parameter)),
        ("storage", None if meta else "torch:%d" % impl),
        ("sha256", None if meta else hashlib.sha256(tensor_bytes(t)).hexdigest()),
    ])
    if hasattr(t, "is_conj") and t.is_conj():
        out["conj"] = True
    if hasattr(t, "is_neg") and t.is_neg():
        out["neg"] = True
    if t.is_quantized:
        out["quantizer"] = quantizer_node(t)
    a = attrs_of(t)
    if a:
        out["attrs"] = a
    return out


def storage_node(s):
    """A bare storage as torch.load returns it (a TypedStorage, UntypedStorage saved ones
    included): its elements hashed as the 1-D tensor over the whole storage."""
    import torch
    t = torch.empty(0, dtype=s.dtype)
    t.set_(s)
    impl = s._cdata if hasattr(s, "_cdata") else s._storage._cdata
    return collections.OrderedDict([
        ("type", "storage"),
        ("dtype", dtype_name(s.dtype)),
        ("numel", s.size()),
        ("nbytes", s.size() * t.element_size()),
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
        return {"type": "int", "value": int_value(v)}
    if isinstance(v, float):
        return {"type": "float", "value": float_text(v)}
    if isinstance(v, complex):
        return {"type": "complex", "real": float_text(v.real), "imag": float_text(v.imag)}
    if isinstance(v, torch.device):
        return {"type": "device", "value": str(v)}
    if isinstance(v, torch.dtype):
        return {"type": "dtype", "value": dtype_name(v)}
    if isinstance(v, torch.layout):
        return {"type": "layout", "value": str(v).replace("torch.", "")}
    if hasattr(torch, "qscheme") and isinstance(v, torch.qscheme):
        return {"type": "qscheme", "value": str(v).replace("torch.", "")}
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
    if isinstance(v, frozenset):
        return {"type": "set", "frozenset": True, "items": [node(x) for x in v]}
    if isinstance(v, set):
        return {"type": "set", "items": [node(x) for x in v]}
    typed_storage = getattr(torch.storage, "TypedStorage", None)
    if typed_storage is not None and isinstance(v, typed_storage):
        return storage_node(v)
    if isinstance(v, dict):
        out = collections.OrderedDict([
            ("type", "dict"),
            ("ordered", isinstance(v, collections.OrderedDict))])
        if isinstance(v, collections.Counter):
            out["counter"] = True
        out["items"] = [[node(k), node(x)] for k, x in v.items()]
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
        with zipfile.ZipFile(path) as z, open(path, "rb") as f:
            for info in z.infolist():
                if info.filename.split("/", 1)[-1] == "byteorder":
                    # read the stored record directly: files saved with torch 2.6+'s
                    # compute_crc32=False carry CRC 0, which zipfile's reader refuses
                    f.seek(info.header_offset + 26)
                    n, m = f.read(2), f.read(2)
                    f.seek(int.from_bytes(n, "little") + int.from_bytes(m, "little"), 1)
                    byteorder = f.read(info.file_size).decode("ascii").strip()
        return "zip", byteorder
    if tarfile.is_tarfile(path):
        return "tar", "little"
    return "legacy", "little"


def load(path, weights_only):
    """torch.load as the tests use it. weights_only "prefer": True, else False after saying on
    stderr why torch's restricted unpickler refused the file."""
    import torch
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # protocol/deprecation notes are not our concern
        if weights_only != "prefer":
            return torch.load(path, map_location="cpu", weights_only=weights_only)
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
            print("torch_dump: %s: loaded with weights_only=True" % path, file=sys.stderr)
            return obj
        except Exception as e:  # torch raises UnpicklingError or RuntimeError wrapping it
            why = str(e).strip().splitlines()
            print("torch_dump: %s: weights_only=True refused (%s); loaded with "
                  "weights_only=False" % (path, why[0][:200] if why else type(e).__name__),
                  file=sys.stderr)
            return torch.load(path, map_location="cpu", weights_only=False)


def dump(path, weights_only=False):
    fmt, byteorder = container_info(path)
    obj = load(path, weights_only)
    return collections.OrderedDict([("format", fmt), ("byteorder", byteorder),
                                    ("root", node(obj))])


def main(argv):
    args = argv[1:]
    weights_only = False
    if args and args[0] == "--weights-only":
        weights_only = True
        args = args[1:]
    elif args and args[0] == "--prefer-weights-only":
        weights_only = "prefer"
        args = args[1:]
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        import torch  # noqa: F401
    except ImportError as e:
        print("torch_dump: torch is not importable (%s): skipping" % e)
        return 77
    json.dump(dump(args[0], weights_only), sys.stdout, ensure_ascii=False, allow_nan=False)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
