"""Hostile distributed-checkpoint folders (standard library only): each must be refused.

    hostile_dcp.py STATEDICT WORKDIR

Builds DCP folders the way torch 2.x lays them out (.metadata pickled with DCP's dataclasses,
items as torch.save zips in __<r>_0.distcp files), with the class paths torch's pickles name
but defined here as stand-ins (no torch needed). The valid folder is read (ls lists its
entries, show gives the reassembled values); every broken one (classes outside DCP's, fields
of wrong types, chunk geometry lies, path escapes, lengths past the file, no .metadata) makes
`statedict ls` and `statedict verify` exit 3 with a message naming the fault (faults only the
tensor items' bytes show: verify only, as ls reads .metadata and bytes items alone), and nothing the
pickle names is ever run (a marker file a REDUCE of os.system would create stays absent).
Valid folders in the layouts of torch 2.2 and 2.3 (which do not install here), pickled as
CPython 3.10 and 3.11 do, are read exactly as dcp_to_torch_save reads them (old_spec: the tree
of each was checked once against real torch 2.6's and 2.14's dcp_to_torch_save).
Exit 0 on success, 1 on a failure.
"""
import collections
import copy
import enum
import hashlib
import io
import json
import os
import pickle
import shutil
import subprocess
import sys
import types
import zipfile

STATEDICT, WORK = sys.argv[1:3]
MARKER = os.path.join(WORK, "PWNED")


def module(name):
    m = types.ModuleType(name)
    sys.modules[name] = m
    return m


torch = module("torch")
module("torch.distributed")
module("torch.distributed.checkpoint")
md = module("torch.distributed.checkpoint.metadata")
fs = module("torch.distributed.checkpoint.filesystem")
ser = module("torch.serialization")
utils = module("torch._utils")
evil = module("evil")


def cls(mod, name, base=object, **attrs):
    c = type(name, (base,), dict(attrs))
    c.__module__ = mod.__name__
    c.__qualname__ = name
    setattr(mod, name, c)
    return c


class Size(tuple):
    def __reduce__(self):
        return (Size, (tuple(self),))


Size.__module__, Size.__qualname__ = "torch", "Size"
torch.Size = Size
for dt in ("float32", "int32", "float64"):
    cls(torch, dt)
torch.FloatStorage = cls(torch, "FloatStorage")


def _get_layout(name):
    raise AssertionError("never called")


_get_layout.__module__, _get_layout.__qualname__ = "torch.serialization", "_get_layout"
ser._get_layout = _get_layout


class Layout:
    def __reduce__(self):
        return (_get_layout, ("torch.strided",))


def _rebuild_tensor_v2(*a):
    raise AssertionError("never called")


_rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
utils._rebuild_tensor_v2 = _rebuild_tensor_v2


class MemFormat(enum.Enum):
    TORCH_CONTIGUOUS_FORMAT = 0
    TORCH_CHANNELS_LAST = 1
    TORCH_PRESERVE_FORMAT = 2


MemFormat.__module__, MemFormat.__qualname__ = md.__name__, "_MEM_FORMAT_ENCODING"
MemFormat.__name__ = "_MEM_FORMAT_ENCODING"
md._MEM_FORMAT_ENCODING = MemFormat


def obj(c, **fields):
    o = c.__new__(c)
    o.__dict__.update(fields)
    return o


Metadata = cls(md, "Metadata")
TSM = cls(md, "TensorStorageMetadata")
BSM = cls(md, "BytesStorageMetadata")
Chunk = cls(md, "ChunkStorageMetadata")
MIndex = cls(md, "MetadataIndex", __hash__=lambda self: id(self))
StorageMeta = cls(md, "StorageMeta")
StorageInfo = cls(fs, "_StorageInfo")
EvilMetadata = cls(evil, "Metadata")


class TensorProperties:
    def __init__(self, dtype, mem=MemFormat.TORCH_CONTIGUOUS_FORMAT, layout=None):
        self.state = (dtype, layout or Layout(), False, mem, False)

    def __reduce_ex__(self, proto):
        return (copyreg_newobj, (type(self),), self.state)


import copyreg  # noqa: E402

copyreg_newobj = copyreg.__newobj__
TensorProperties.__module__, TensorProperties.__qualname__ = md.__name__, "TensorProperties"
md.TensorProperties = TensorProperties

# torch <= 2.2 pickles TensorProperties and its enum from the sharded-tensor module
module("torch.distributed._shard")
module("torch.distributed._shard.sharded_tensor")
shard_md = module("torch.distributed._shard.sharded_tensor.metadata")
OldTensorProperties = cls(shard_md, "TensorProperties", TensorProperties)


class OldMemFormat(enum.Enum):
    TORCH_CONTIGUOUS_FORMAT = 0
    TORCH_CHANNELS_LAST = 1
    TORCH_PRESERVE_FORMAT = 2


OldMemFormat.__module__, OldMemFormat.__qualname__ = shard_md.__name__, "MEM_FORMAT_ENCODING"
OldMemFormat.__name__ = "MEM_FORMAT_ENCODING"
shard_md.MEM_FORMAT_ENCODING = OldMemFormat


class Storage:
    def __init__(self, key, numel):
        self.key, self.numel = key, numel


class Tensor:
    def __init__(self, storage, size, stride):
        self.args = (storage, 0, Size(size), tuple(stride), False, collections.OrderedDict())

    def __reduce__(self):
        return (_rebuild_tensor_v2, self.args)


def torch_save(value, storages=()):
    """torch.save's zip of value; storages: raw bytes per key '0', '1', ..."""
    buf = io.BytesIO()
    p = pickle.Pickler(buf, protocol=2)
    p.persistent_id = lambda o: (("storage", torch.FloatStorage, o.key, "cpu", o.numel)
                                 if isinstance(o, Storage) else None)
    p.dump(value)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", buf.getvalue())
        z.writestr("archive/byteorder", "little")
        for i, b in enumerate(storages):
            z.writestr(f"archive/data/{i}", b)
        z.writestr("archive/version", "3\n")
    return out.getvalue()


def f32(vals):
    import struct
    return struct.pack(f"<{len(vals)}f", *vals)


def tensor_item(vals, size):
    stride = [1] * len(size)
    for d in range(len(size) - 2, -1, -1):
        stride[d] = stride[d + 1] * size[d + 1]
    return torch_save(Tensor(Storage("0", len(vals)), size, stride), [f32(vals)])


def spec():
    """The valid folder: model.w (4, 3) float32 in two row chunks on two ranks, model.b (3,)
    whole, epoch an int."""
    w = [float(i) for i in range(12)]
    return {
        "entries": [
            ("model.w", "tensor", "float32", (4, 3), [((0, 0), (2, 3)), ((2, 0), (2, 3))]),
            ("model.b", "tensor", "float32", (3,), [((0,), (3,))]),
            ("epoch", "bytes"),
        ],
        "items": [  # fqn, offsets, file, bytes
            ("epoch", None, "__0_0.distcp", torch_save(5)),
            ("model.w", (0, 0), "__0_0.distcp", tensor_item(w[:6], (2, 3))),
            ("model.w", (2, 0), "__1_0.distcp", tensor_item(w[6:], (2, 3))),
            ("model.b", (0,), "__1_0.distcp", tensor_item([0.5, 1.5, 2.5], (3,))),
        ],
        "planner": {"model.w": ("model", "w"), "model.b": ("model", "b"), "epoch": ("epoch",)},
        "storage_info": {},   # per item index: field overrides
        "index_fields": {},   # per item index: MetadataIndex field overrides
        "metadata_extra": {},
        "drop_fields": (),    # Metadata fields left out (torch <= 2.3 has 3 of the 5)
        "properties": TensorProperties,  # dtype -> the TensorProperties pickled
        "root": None,
    }


def build(folder, s, post=None):
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    files, infos = {}, {}
    for i, (fqn, off, fname, data) in enumerate(s["items"]):
        buf = files.setdefault(fname, bytearray())
        infos[i] = (fname, len(buf), len(data))
        buf += data
    for fname, b in files.items():
        with open(os.path.join(folder, fname), "wb") as f:
            f.write(b)
    sdm = {}
    for e in s["entries"]:
        if e[1] == "bytes":
            sdm[e[0]] = obj(BSM)
        else:
            fqn, _, dt, size, chunks = e
            sdm[fqn] = obj(TSM, properties=s["properties"](getattr(torch, dt)), size=Size(size),
                           chunks=[obj(Chunk, offsets=Size(o), sizes=Size(z)) for o, z in chunks])
    storage = {}
    for i, (fqn, off, fname, data) in enumerate(s["items"]):
        k = dict(fqn=fqn, index=0) if off is None else dict(fqn=fqn, index=0, offset=Size(off))
        k.update(s["index_fields"].get(i, {}))
        f, o, n = infos[i]
        v = dict(relative_path=f, offset=o, length=n)
        v.update(s["storage_info"].get(i, {}))
        storage[obj(MIndex, **k)] = obj(StorageInfo, **v)
    fields = dict(state_dict_metadata=sdm, planner_data=s["planner"], storage_data=storage,
                  storage_meta=obj(StorageMeta, checkpoint_id="ckpt", save_id="x", load_id=None,
                                   modules=[]),
                  version="1.0.0")
    fields.update(s["metadata_extra"])
    for name in s["drop_fields"]:
        del fields[name]
    root = s["root"] if s["root"] is not None else obj(Metadata, **fields)
    with open(os.path.join(folder, ".metadata"), "wb") as f:
        pickle.dump(root, f, protocol=4)
    if post:
        post(folder)


failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print(f"FAIL: {what}")


def run(*args):
    return subprocess.run([STATEDICT, *args], capture_output=True, text=True)


class Reduce:
    def __init__(self, fn, args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return (self.fn, self.args)


def case(name, mutate, expect, post=None, items=False):
    """items: a fault only the tensor items' bytes show. `ls` lists a folder from .metadata
    (and the bytes items) alone, so it lists such a folder; verify, which reads every item,
    refuses it."""
    s = spec()
    mutate(s)
    folder = os.path.join(WORK, name)
    build(folder, s, post)
    if items:
        p = run("ls", folder)
        check(p.returncode == 0 and "model.w" in p.stdout and " meta" not in p.stdout,
              f"{name}: ls exited {p.returncode}, stdout {p.stdout[:300]!r}, stderr "
              f"{p.stderr.strip()[:300]!r}, expected a listing from .metadata")
    for cmd in ("verify",) if items else ("ls", "verify"):
        p = run(cmd, folder)  # verify: 1 for a file that fails its checks, 3 for unreadable
        check(p.returncode in ((3,) if cmd == "ls" else (1, 3)) and expect in p.stderr,
              f"{name}: {cmd} exited {p.returncode}, stderr {p.stderr.strip()[:400]!r}, "
              f"expected exit 3 and {expect!r}")


def set_entry(i, e):
    return lambda s: s["entries"].__setitem__(i, e)


def storage_info(i, **kw):
    return lambda s: s["storage_info"].__setitem__(i, kw)


def index_field(i, **kw):
    return lambda s: s["index_fields"].__setitem__(i, kw)


def extra(**kw):
    return lambda s: s["metadata_extra"].update(kw)


def epoch_at(path):
    """The bytes entry 'epoch' renamed to its planner_data path joined with '.', as torch names
    every entry."""
    fqn = ".".join(map(str, path))

    def f(s):
        s["entries"][2] = (fqn, "bytes")
        s["items"][0] = (fqn,) + s["items"][0][1:]
        del s["planner"]["epoch"]
        s["planner"][fqn] = path
    return f


def both(*fns):
    def f(s):
        for fn in fns:
            fn(s)
    return f


class T:
    """An expected float32 tensor: its size and its elements in C order."""
    def __init__(self, size, vals):
        self.size, self.vals = size, vals


def norm(node):
    """A dump NODE as comparable Python values (dicts as ('dict', ordered, pairs))."""
    t = node["type"]
    if t == "dict":
        return ("dict", node["ordered"], [(norm(k), norm(v)) for k, v in node["items"]])
    if t in ("list", "tuple"):
        return (t, [norm(v) for v in node["items"]])
    if t == "tensor":
        return ("tensor", node["dtype"], node["shape"], node["stride"], node["storage_offset"],
                node["requires_grad"], node["sha256"])
    if t == "none":
        return ("none",)
    return (t, node["value"])


def expect(v):
    """norm() of what dump gives for the Python value v (plain dicts, as dcp_to_torch_save
    and torch.save of a non-tensor value give them)."""
    if isinstance(v, dict):
        return ("dict", False, [(expect(k), expect(x)) for k, x in v.items()])
    if isinstance(v, (list, tuple)):
        return ("list" if isinstance(v, list) else "tuple", [expect(x) for x in v])
    if isinstance(v, T):
        stride = [1] * len(v.size)
        for d in range(len(v.size) - 2, -1, -1):
            stride[d] = stride[d + 1] * v.size[d + 1]
        return ("tensor", "float32", list(v.size), stride, 0, False,
                hashlib.sha256(f32(v.vals)).hexdigest())
    if v is None:
        return ("none",)
    return ({bool: "bool", int: "int", float: "float", str: "str"}[type(v)], v)


W12 = [float(i) for i in range(12)]
PARAM_GROUPS = [{"lr": 0.001, "betas": (0.9, 0.999), "eps": 1e-08, "weight_decay": 0,
                 "amsgrad": False, "params": [0, 1, 2]}]
META = {"tag": "run", "history": [0.9, 0.5]}
EXP_AVG = [0.125, -0.25, 0.001]


def old_spec(release, py):
    """A folder as torch `release` (2.2 or 2.3) on CPython `py` (3.10 or 3.11) saves from two
    ranks {"model": {"w": (4, 3) row-sharded, "b": (3,)}, "optim": {"state": {0: {"step": 0-dim,
    "exp_avg": (3,)}}, "param_groups": PARAM_GROUPS}, "epoch": 5, "loss": 0.25, "meta": META,
    "extra": {}, "hist": [(2,), 0.5]}: Metadata with 3 fields, TensorProperties from
    torch.distributed._shard.sharded_tensor.metadata (2.2) or
    torch.distributed.checkpoint.metadata (2.3), the memory-format enum by value (3.10) or through builtins.getattr by name (3.11), and the
    v2.3 flattening: every dict or list without tensors (param_groups, meta, {}) one bytes item.
    Non-tensor items on the coordinator (first in __0_0.distcp); replicated tensors kept on
    rank 0 by 2.2's dedup_tensors, moved to rank 1 (fewest planned bytes) by 2.3's
    dedup_save_plans. No pathlib path occurs: torch <= 2.3 has no StorageMeta (checkpoint_id)."""
    enum_cls = OldMemFormat if release == "2.2" else MemFormat
    mem = (Reduce(getattr, (enum_cls, "TORCH_CONTIGUOUS_FORMAT")) if py == "3.11"
           else Reduce(enum_cls, (0,)))
    layout = Layout()
    tp = OldTensorProperties if release == "2.2" else TensorProperties
    r = 0 if release == "2.2" else 1   # the rank keeping the replicated tensors
    flat = [  # flatten order: fqn, path, then a tensor's size and its chunks [(offsets,
              # sizes, elements, rank)], or a non-tensor value
        ("model.w", ("model", "w"), (4, 3),
         [((0, 0), (2, 3), W12[:6], 0), ((2, 0), (2, 3), W12[6:], 1)]),
        ("model.b", ("model", "b"), (3,), [((0,), (3,), [0.5, 1.5, 2.5], r)]),
        ("optim.state.0.step", ("optim", "state", "0", "step"), (), [((), (), [7.0], r)]),
        ("optim.state.0.exp_avg", ("optim", "state", "0", "exp_avg"), (3,),
         [((0,), (3,), EXP_AVG, r)]),
        ("optim.param_groups", ("optim", "param_groups"), PARAM_GROUPS),
        ("epoch", ("epoch",), 5), ("loss", ("loss",), 0.25), ("meta", ("meta",), META),
        ("extra", ("extra",), {}),
        ("hist.0", ("hist", 0), (2,), [((0,), (2,), [1.0, 2.0], r)]),  # a list holding a tensor
        ("hist.1", ("hist", 1), 0.5),                                  # is traversed
    ]
    tensors = [t for t in flat if len(t) == 4]
    values = [t for t in flat if len(t) == 3]
    s = spec()
    s["properties"] = lambda dt: tp(dt, mem, layout)
    s["drop_fields"] = ("storage_meta", "version")
    s["planner"] = {t[0]: t[1] for t in flat}
    flat = list(s["planner"])
    # state_dict_metadata: rank 0's items (all non-tensor ones) in flatten order, then those
    # new in rank 1's
    by_name = {t[0]: t for t in tensors}
    sdm_order = [f for f in flat if f not in by_name or any(c[3] == 0 for c in by_name[f][3])]
    sdm_order += [f for f in flat if f not in sdm_order]
    s["entries"] = [(f, "bytes") if f not in by_name else
                    (f, "tensor", "float32", by_name[f][2], [(c[0], c[1]) for c in by_name[f][3]])
                    for f in sdm_order]
    # storage_data and the files: rank 0's bytes items, its tensor items, then rank 1's
    s["items"], s["index_fields"] = [], {}
    for fqn, _, v in values:
        s["index_fields"][len(s["items"])] = {"index": None}
        s["items"].append((fqn, None, "__0_0.distcp", torch_save(v)))
    for rank in (0, 1):
        for fqn, _, size, chunks in tensors:
            for k, (off, sz, vals, cr) in enumerate(chunks):
                if cr == rank:
                    s["index_fields"][len(s["items"])] = {"index": k}
                    s["items"].append((fqn, off, f"__{rank}_0.distcp", tensor_item(vals, sz)))
    return s


def old_layout(release, py):
    """Builds old_spec(release, py) and checks statedict reads it as dcp_to_torch_save would:
    the nesting of planner_data with every key a str, keys in state_dict_metadata order,
    tensors whole and contiguous, the values as saved; verify and ls accept it, and convert to
    a .pt file gives the same tree."""
    name = f"torch{release}-py{py}"
    folder = os.path.join(WORK, name)
    build(folder, old_spec(release, py))
    with open(os.path.join(folder, ".metadata"), "rb") as f:
        raw = f.read()
    check(raw[:2] == b"\x80\x04" and b"storage_meta" not in raw and b"1.0.0" not in raw and
          (b"_shard.sharded_tensor.metadata" in raw) == (release == "2.2") and
          (b"getattr" in raw) == (py == "3.11"), f"{name}: the .metadata built is not {name}'s")
    state = {"0": {"step": T((), [7.0]), "exp_avg": T((3,), EXP_AVG)}}
    model = {"w": T((4, 3), W12), "b": T((3,), [0.5, 1.5, 2.5])}
    hist = [T((2,), [1.0, 2.0]), 0.5]
    if release == "2.2":
        tree = {"model": model, "optim": {"state": state, "param_groups": PARAM_GROUPS},
                "epoch": 5, "loss": 0.25, "meta": META, "extra": {}, "hist": hist}
    else:  # the replicated tensors come after rank 0's items in state_dict_metadata
        tree = {"model": model, "optim": {"param_groups": PARAM_GROUPS, "state": state},
                "epoch": 5, "loss": 0.25, "meta": META, "extra": {}, "hist": hist}
    want = expect(tree)
    for cmd in ("ls", "verify"):
        p = run(cmd, folder)
        check(p.returncode == 0,
              f"{name}: {cmd} exited {p.returncode}, stderr {p.stderr.strip()[:300]!r}")
    p = run("dump", folder)
    got = norm(json.loads(p.stdout)["root"]) if p.returncode == 0 else None
    check(got == want, f"{name}: dump exited {p.returncode}, gave {got}, expected {want}, "
          f"stderr {p.stderr.strip()[:300]!r}")
    pt = os.path.join(WORK, name + ".pt")
    p = run("convert", folder, pt)
    q = run("dump", pt)
    got = norm(json.loads(q.stdout)["root"]) if p.returncode == q.returncode == 0 else None
    check(got == want, f"{name}: convert exited {p.returncode} ({p.stderr.strip()[:300]!r}), "
          f"its file dumps as {got}, expected {want}")


W = ("model.w", "tensor", "float32", (4, 3))
if __name__ == "__main__":
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    # the valid folder
    good = os.path.join(WORK, "good")
    build(good, spec())
    p = run("ls", good)
    check(p.returncode == 0 and "model.w" in p.stdout and "[4, 3]" in p.stdout and
          "epoch" in p.stdout, f"good: ls {p.returncode} {p.stdout} {p.stderr}")
    p = run("show", good, "model.w")
    check(p.returncode == 0 and "11" in p.stdout and "6" in p.stdout,
          f"good: show {p.returncode} {p.stdout} {p.stderr}")
    check(run("verify", good).returncode == 0, "good: verify")
    # a file of the folder read on its own: the message says to read the folder
    for cmd, name in (("ls", ".metadata"), ("verify", "__0_0.distcp")):
        p = run(cmd, os.path.join(good, name))
        check(p.returncode in (1, 3) and "file of a distributed checkpoint: read its folder"
              in p.stderr, f"good/{name}: {cmd} exited {p.returncode}, stderr {p.stderr[:300]!r}")

    # a tensor saved whole from a transposed tensor (DCP keeps a dense tensor's strides) and
    # one saved as a view into a larger storage: dcp_to_torch_save copies both into
    # torch.empty, so both come out contiguous, storage offset 0, holding their own bytes only
    s = spec()
    wt = [float(r * 3 + c) for c in range(3) for r in range(4)]  # column-major storage
    s["entries"][0] = W + ([((0, 0), (4, 3))],)
    view = Tensor(Storage("0", 20), (3,), (1,))
    view.args = (view.args[0], 5) + view.args[2:]
    s["items"] = [s["items"][0],
                  ("model.w", (0, 0), "__0_0.distcp",
                   torch_save(Tensor(Storage("0", 12), (4, 3), (1, 4)), [f32(wt)])),
                  ("model.b", (0,), "__1_0.distcp",
                   torch_save(view, [f32([9.0] * 5 + [0.5, 1.5, 2.5] + [9.0] * 12)]))]
    strided = os.path.join(WORK, "strided_items")
    build(strided, s)
    p = run("show", strided, "model.w")
    check(p.returncode == 0 and "stride [3, 1] offset 0, 48 bytes" in p.stdout and
          "[ 9., 10., 11.]" in p.stdout, f"strided_items: show model.w {p.returncode} {p.stdout}")
    p = run("show", strided, "model.b")
    check(p.returncode == 0 and "stride [1] offset 0, 12 bytes" in p.stdout and
          "[0.5000, 1.5000, 2.5000]" in p.stdout, f"strided_items: show model.b {p.returncode} {p.stdout}")

    # one file per item (torch's single_file_per_rank=False): 300 files read under a limit of
    # 64 file descriptors, mapped (show) and copied (verify, ls --copy)
    s = spec()
    for i in range(300):
        s["entries"].append((f"t.{i}", "tensor", "float32", (2,), [((0,), (2,))]))
        s["planner"][f"t.{i}"] = ("t", str(i))
        s["items"].append((f"t.{i}", (0,), f"__0_{i + 1}.distcp", tensor_item([0.5, float(i)], (2,))))
    many = os.path.join(WORK, "file_per_item")
    build(many, s)

    def fd_limit():
        import resource
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))

    for args in (["verify", many], ["ls", "--copy", many], ["show", many, "t.299"],
                 ["show", "--copy", many, "t.299"]):
        p = subprocess.run([STATEDICT, *args], capture_output=True, text=True, preexec_fn=fd_limit)
        check(p.returncode == 0 and ("299." in p.stdout or args[0] != "show"),
              f"file_per_item: {args} exited {p.returncode}, stderr {p.stderr.strip()[:300]!r}")

    # the torch <= 2.3 layouts, valid, read exactly
    for release, py in (("2.2", "3.10"), ("2.2", "3.11"), ("2.3", "3.10"), ("2.3", "3.11")):
        old_layout(release, py)

    # classes outside DCP's (nothing runs: the marker file stays absent)
    case("os_system", storage_info(3, relative_path=Reduce(os.system, (f"touch {MARKER}",))),
         "system' is not one of DCP's")
    case("evil_metadata", lambda s: s.__setitem__("root", obj(EvilMetadata)),
         "'evil.Metadata' is not one of DCP's")
    case("getattr_other", extra(version=Reduce(getattr, (Metadata, "__init__"))),
         "Metadata.version is a getattr")
    case("root_dict", lambda s: s.__setitem__("root", {"a": 1}), "not DCP's Metadata")
    # fields of wrong types
    case("offset_str", storage_info(1, offset="12"), "offset / length is not an int")
    case("length_negative", storage_info(1, length=-1), "offset / length is not an int")
    case("fqn_int", index_field(2, fqn=5), "MetadataIndex.fqn is a int")
    case("extra_field", extra(evil=1), "field 'evil'")
    case("version_int", extra(version=3), "Metadata.version is a int")
    case("planner_list", extra(planner_data=[1]), "planner_data is a list")
    case("sdm_tuple", extra(state_dict_metadata=("x",)), "state_dict_metadata is a tuple")
    case("size_list", lambda s: s["entries"].__setitem__(1, ("model.b", "tensor", "float32",
                                                            (3,), [((0,), (3,))])) or
         s.__setitem__("root", None) or s["metadata_extra"].update(
             state_dict_metadata={"model.b": obj(TSM, properties=TensorProperties(torch.float32),
                                                 size=[3], chunks=[])}), "size is not a torch.Size")
    case("transform", storage_info(3, transform_descriptors=["stream.zstd/1"]),
         "stream transforms")
    # chunk geometry lies
    case("overlap", set_entry(0, W + ([((0, 0), (2, 3)), ((1, 0), (2, 3))],)),
         "has no storage_data entry")
    case("overlap_indexed", both(set_entry(0, W + ([((0, 0), (2, 3)), ((1, 0), (2, 3))],)),
                                 index_field(2, offset=Size((1, 0)))), "overlaps another chunk", items=True)
    case("hole", set_entry(0, W + ([((0, 0), (2, 3))],)), "leave a hole")
    case("outside", both(set_entry(0, W + ([((0, 0), (2, 3)), ((3, 0), (2, 3))],)),
                         index_field(2, offset=Size((3, 0)))), "lies outside the size")
    case("chunk_dims", set_entry(0, W + ([((0, 0), (2, 3)), ((2,), (2,))],)),
         "of the tensor's 2 dimensions")
    case("item_shape", lambda s: s["items"].__setitem__(
        2, ("model.w", (2, 0), "__1_0.distcp", tensor_item([1.0] * 6, (3, 2)))),
        "another shape than", items=True)
    case("overlap_and_hole", both(set_entry(0, W + ([((0, 0), (3, 3)), ((2, 0), (1, 3))],)),
                                  index_field(2, offset=Size((2, 0)))), "another shape than", items=True)
    case("dtype_lie", set_entry(0, ("model.w", "tensor", "int32", (4, 3),
                                    [((0, 0), (2, 3)), ((2, 0), (2, 3))])), "the metadata says", items=True)
    case("huge_tensor", both(set_entry(0, ("model.w", "tensor", "float32", (2 ** 40, 3),
                                           [((0, 0), (2, 3)), ((2, 0), (2 ** 40 - 2, 3))])),
                             index_field(2, offset=Size((2, 0)))), "items together are only")
    # 8M-element chunks, each within 32 MiB of its small item, but not all of them together
    case("chunks_claim_much", both(set_entry(1, ("model.b", "tensor", "float32", (16000000,),
                                                 [((0,), (8000000,)), ((8000000,), (8000000,))])),
                                   lambda s: s["items"].append(
                                       ("model.b", (8000000,), "__1_0.distcp", tensor_item([1.0], (1,)))),
                                   lambda s: s["items"].__setitem__(
                                       3, ("model.b", (0,), "__1_0.distcp", tensor_item([1.0], (1,))))),
         "items together are only")
    case("volume_short", set_entry(0, ("model.w", "tensor", "float32", (40, 3),
                                       [((0, 0), (2, 3)), ((2, 0), (2, 3))])), "leave a hole")
    case("list_index_huge", epoch_at(("l", 10 ** 9)),
         "list index that pads")
    # nested lists each short enough, together too many slots (and a 200,000-deep path, which
    # crashed the recursive rebuild of the nesting)
    case("list_pad_nested", epoch_at(("l", 30000, 30000, 30000)),
         "list index that pads")
    case("deep_planner_path", epoch_at(("k",) * 200000),
         "200000 deep, over the limit")
    case("dup_storage", index_field(1, offset=Size((2, 0))), "two entries for item")
    # paths that do not join to their entry's name: torch's load flattens the tree it rebuilt
    # and looks each joined path up, failing ("Missing key") or, for two entries swapping
    # places, reading each entry's data into the other's place
    case("planner_conflict", lambda s: s["planner"].__setitem__("model.b", ("model", "w")),
         "does not join to its name")
    case("planner_swap", both(lambda s: s["planner"].__setitem__("model.b", ("model", "w")),
                              lambda s: s["planner"].__setitem__("model.w", ("model", "b"))),
         "does not join to its name")
    case("planner_through_value", both(epoch_at(("model", "b", "x")),
                                       lambda s: s["planner"].__setitem__("model.b", ("model", "b"))),
         "goes through another entry's value")
    case("bytes_is_tensor", lambda s: s["items"].__setitem__(
        3, ("model.b", (0,), "__1_0.distcp", torch_save(5))), "not a tensor", items=True)
    # two entries naming the same bytes (each entry would read and copy them again: a small
    # folder whose item is named by thousands of entries loads thousands of copies)
    case("shared_bytes", both(lambda s: s["entries"].append(("epoch2", "bytes")),
                              lambda s: s["planner"].__setitem__("epoch2", ("epoch2",)),
                              lambda s: s["items"].append(("epoch2", None, "__0_0.distcp", b"")),
                              storage_info(4, offset=0, relative_path="__0_0.distcp",
                                           length=len(torch_save(5)))), "share bytes of")
    case("tensor_items_overlap", storage_info(3, offset=10), "share bytes of")
    case("file_alias", storage_info(3, relative_path="__5_0.distcp"), "is the same file as",
         post=lambda d: os.symlink("__1_0.distcp", os.path.join(d, "__5_0.distcp")))
    # 100 small items, each a tuple of one list referenced 250 times: 62,500 values apiece
    # through shared references, 6 million in all from 140 KB
    shared = torch_save(tuple([[0] * 250] * 250))

    def many_shared(s):
        for i in range(100):
            s["entries"].append((f"e{i}", "bytes"))
            s["planner"][f"e{i}"] = (f"e{i}",)
            s["items"].append((f"e{i}", None, "__0_0.distcp", shared))
    case("bytes_items_expand", many_shared, "expand to more values through shared references")
    # path escapes
    case("dotdot", storage_info(3, relative_path="../__1_0.distcp"), "not a file name inside")
    case("absolute", storage_info(3, relative_path="/etc/passwd"), "not a file name inside")
    case("symlink_out", storage_info(3, relative_path="__9_0.distcp"), "leaving the checkpoint",
         post=lambda d: os.symlink("/etc/hostname", os.path.join(d, "__9_0.distcp")))
    case("metadata_symlink_out", lambda s: None, "symbolic link leaving the checkpoint folder",
         post=lambda d: (os.rename(os.path.join(d, ".metadata"), os.path.join(WORK, "md_outside")),
                         os.symlink(os.path.join(WORK, "md_outside"), os.path.join(d, ".metadata"))))
    case("missing_file", storage_info(3, relative_path="__7_0.distcp"), "does not exist")
    # lengths and offsets past the file
    case("length_past_end", storage_info(3, length=100000), "past its end")
    case("offset_huge", storage_info(3, offset=2 ** 62), "past its end")
    case("offset_shifted", storage_info(3, offset=len(tensor_item([0.0] * 6, (2, 3))) + 1,
                                        length=len(tensor_item([0.0] * 3, (3,))) - 1),
         "not a torch.save archive", items=True)
    case("item_truncated", storage_info(3, length=200), "item 'model.b'", items=True)
    # unfinished save and broken .metadata
    case("no_metadata", lambda s: None, "unfinished save",
         post=lambda d: os.remove(os.path.join(d, ".metadata")))
    case("metadata_truncated", lambda s: None, ".metadata",
         post=lambda d: open(os.path.join(d, ".metadata"), "r+b").truncate(100))

    # a folder holding no checkpoint: verify says so and exits 3 (nothing was read), as ls does
    empty = os.path.join(WORK, "empty")
    os.makedirs(empty)
    for cmd in ("ls", "verify"):
        p = run(cmd, empty)
        check(p.returncode == 3 and "not a distributed checkpoint" in p.stderr,
              f"empty folder: {cmd} exited {p.returncode}, stderr {p.stderr.strip()[:300]!r}")
    # convert --format dcp refuses the options its writer does not take, writing nothing
    pt = os.path.join(WORK, "in.pt")
    with open(pt, "wb") as f:
        f.write(torch_save({"w": Tensor(Storage("0", 2), (2,), (1,))}, [f32([1.0, 2.0])]))
    for opt in (["--layout", "1.13"], ["--layout", "2.x"], ["--not-weights-only"],
                ["--max-shard-size", "1MB"], ["--drop-non-tensors"]):
        out = os.path.join(WORK, "conv_" + opt[0].strip("-"))
        p = run("convert", "--format", "dcp", *opt, pt, out)
        check(p.returncode == 2 and f"{opt[0]} does not apply to --format dcp" in p.stderr and
              not os.path.exists(out), f"convert --format dcp {opt}: exited {p.returncode}, "
              f"stderr {p.stderr.strip()[:300]!r}")
    p = run("convert", "--format", "dcp", pt, os.path.join(WORK, "conv_ok"))
    check(p.returncode == 0 and run("show", os.path.join(WORK, "conv_ok"), "w").returncode == 0,
          f"convert --format dcp: exited {p.returncode}, stderr {p.stderr.strip()[:300]!r}")
    # a save that fails writing its data (here a 1 MB file size limit against 2 MB of data)
    # leaves the previous checkpoint in the folder as it was
    big = os.path.join(WORK, "big.pt")
    with open(big, "wb") as f:
        f.write(torch_save({"w": Tensor(Storage("0", 500000), (500000,), (1,))},
                           [f32([0.25] * 500000)]))

    def fsize_limit():
        import resource
        import signal
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))

    p = subprocess.run([STATEDICT, "convert", "--format", "dcp", big, os.path.join(WORK, "conv_ok")],
                       capture_output=True, text=True, preexec_fn=fsize_limit)
    q = run("show", os.path.join(WORK, "conv_ok"), "w")
    check(p.returncode == 3 and q.returncode == 0 and "[2]" in q.stdout and "2." in q.stdout,
          f"failed save over a checkpoint: convert exited {p.returncode} "
          f"({p.stderr.strip()[:200]!r}), then show {q.returncode} {q.stdout[:200]!r} "
          f"{q.stderr.strip()[:200]!r}")
    # a staged file name planted as a link (to a file outside the folder, to the previous
    # checkpoint's own data) is replaced, never written through
    victim = os.path.join(WORK, "victim.txt")
    with open(victim, "w") as f:
        f.write("precious")
    conv = os.path.join(WORK, "conv_ok")
    os.symlink(victim, os.path.join(conv, "__0_0.distcp.partial"))
    p = run("convert", "--format", "dcp", pt, conv)
    with open(victim, "rb") as f:
        kept = f.read()
    check(p.returncode == 0 and kept == b"precious" and
          not os.path.lexists(os.path.join(conv, "__0_0.distcp.partial")),
          f"convert over a planted .partial link: exited {p.returncode}, the link's target now "
          f"{kept[:20]!r}, stderr {p.stderr.strip()[:200]!r}")
    os.symlink("__0_0.distcp", os.path.join(conv, "__0_0.distcp.partial"))
    p = run("convert", "--format", "dcp", pt, conv)
    check(p.returncode == 0 and not os.path.islink(os.path.join(conv, "__0_0.distcp")) and
          run("show", conv, "w").returncode == 0,
          f"save with .partial linked to the old data: exited {p.returncode}, "
          f"stderr {p.stderr.strip()[:200]!r}")
    p = run("convert", "--format", "dcpx", pt, os.path.join(WORK, "conv_bad"))
    check(p.returncode == 2 and "pt, safetensors or dcp" in p.stderr,
          f"convert --format dcpx: exited {p.returncode}, stderr {p.stderr.strip()[:300]!r}")

    check(not os.path.exists(MARKER), "the os.system REDUCE ran")
    print(f"{len(failures)} failures")
    sys.exit(1 if failures else 0)
