"""Writes checkpoints with real torch for test_load, plus what torch itself sees in them.

Usage: /usr/bin/python3 gen_torch.py OUTDIR

For every file NAME.pt it writes NAME.txt, one line per tensor in the order the state dict
lists them (torch.load of the file, not the object saved, so the expectation is torch's view):
    key dtype ndim size... stride... storage_offset storage_group numel value...
storage_group numbers distinct storages in first-seen order (0, 1, ...): two tensors with the
same group share memory in torch. Values are the tensor's elements in C order as Python float
repr, which round-trips float64 exactly.
"""
import os
import sys

import torch

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
torch.manual_seed(1234)


def describe(path):
    sd = torch.load(path, map_location="cpu")
    groups = {}
    lines = []
    for key, t in sd.items():
        ptr = t.storage().data_ptr()
        g = groups.setdefault(ptr, len(groups))
        vals = [repr(float(x)) for x in t.detach().reshape(-1).tolist()]
        dt = str(t.dtype).replace("torch.", "")
        lines.append(" ".join([key, dt, str(t.dim())] + [str(s) for s in t.shape] +
                              [str(s) for s in t.stride()] +
                              [str(t.storage_offset()), str(g), str(t.numel())] + vals))
    with open(path[:-3] + ".txt", "w") as f:
        f.write("\n".join(lines) + "\n")


def mixed():
    return {
        "w": torch.randn(3, 4),
        "b": torch.randn(4, dtype=torch.float64),
        "i": torch.arange(-5, 5, dtype=torch.int64),
        "h": torch.randn(2, 3).half(),
        "u": torch.arange(0, 250, 50, dtype=torch.uint8),
        "flag": torch.tensor([True, False, True]),
        "s": torch.tensor(3.5),
        "t": torch.randn(4, 3).t(),
    }


# Legacy magic-number stream (torch <= 1.5 default), with a view sharing its base's storage.
base = torch.randn(12)
legacy = mixed()
legacy["base"] = base
legacy["view"] = base[2:8].view(2, 3)
torch.save(legacy, os.path.join(out, "legacy.pt"), _use_new_zipfile_serialization=False)
describe(os.path.join(out, "legacy.pt"))

# Zip format with every pickle protocol torch accepts.
for proto in (1, 2, 3, 4, 5):
    p = os.path.join(out, "proto%d.pt" % proto)
    torch.save(mixed(), p, pickle_protocol=proto)
    describe(p)

# A view sharing storage with its base: one data/ record, two tensors.
base = torch.arange(24, dtype=torch.float32)
torch.save({"base": base, "view": base[2:8].view(2, 3), "tview": base.view(4, 6).t(),
            "rank30": base.view([1] * 14 + [4, 1, 6] + [1] * 13).transpose(14, 16)},
           os.path.join(out, "views.pt"))
describe(os.path.join(out, "views.pt"))


# Tied weights: two state_dict keys, one parameter.
class Tied(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(5, 3)
        self.out = torch.nn.Linear(3, 5, bias=False)
        self.out.weight = self.emb.weight


torch.save(Tied().state_dict(), os.path.join(out, "tied.pt"))
describe(os.path.join(out, "tied.pt"))
torch.save(Tied().state_dict(), os.path.join(out, "tied_legacy.pt"),
           _use_new_zipfile_serialization=False)
describe(os.path.join(out, "tied_legacy.pt"))


# The oldest tar layout (FORMAT.md 2.2), written by hand since no installable torch writes it any
# more; torch 1.13's loader still reads it, and describe() records what it reads.
def write_tar(path):
    import collections
    import io
    import pickle
    import struct
    import tarfile

    def member(tar, name, data):
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))

    w = torch.arange(6, dtype=torch.float32) / 10
    b = torch.tensor([0.25, -0.5], dtype=torch.float32)
    storages = io.BytesIO()
    pickle.dump(2, storages, protocol=2)
    for key, data in ((11, w), (12, b)):
        pickle.dump((key, "cpu", torch.FloatStorage), storages, protocol=2)
        storages.write(struct.pack("<q", data.numel()) + data.numpy().tobytes())
    pickle.dump([(13, 11, 2, 3)], storages, protocol=2)  # storage view: w's elements 2..4

    # 24: a rank-30 view of w's elements (the sizes and strides are inline in this member)
    high_sizes = [1] * 18 + [2] + [1] * 10 + [3]
    high_strides = [7] * 18 + [3] + [5] * 10 + [1]
    tensors = io.BytesIO()
    pickle.dump(4, tensors, protocol=2)
    for key, sid, sizes, strides, off in ((21, 11, [2, 3], [3, 1], 0), (22, 12, [2], [1], 0),
                                          (23, 13, [3], [1], 0),
                                          (24, 11, high_sizes, high_strides, 0)):
        pickle.dump((key, sid, torch.FloatTensor), tensors, protocol=2)
        n = len(sizes)
        tensors.write(struct.pack("<i", n) + b"\0" * 4 + struct.pack("<%dq" % n, *sizes) +
                      struct.pack("<%dq" % n, *strides) + struct.pack("<q", off))

    class Ref:
        def __init__(self, k):
            self.k = k

    class P(pickle.Pickler):
        def persistent_id(self, obj):
            return obj.k if isinstance(obj, Ref) else None

    main = io.BytesIO()
    P(main, protocol=2).dump(collections.OrderedDict(
        [("w", Ref("21")), ("b", Ref("22")), ("v", Ref("23")), ("r", Ref("24"))]))
    sys_info = pickle.dumps({"protocol_version": 1000, "little_endian": True,
                             "type_sizes": {"short": 2, "int": 4, "long": 8}}, protocol=2)
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        member(tar, "sys_info", sys_info)
        member(tar, "pickle", main.getvalue())
        member(tar, "tensors", tensors.getvalue())
        member(tar, "storages", storages.getvalue())


write_tar(os.path.join(out, "tar.pt"))
describe(os.path.join(out, "tar.pt"))

# A legacy file whose object pickle is larger than the first read window of copy mode (1 MiB).
big = {"k%d" % i: torch.tensor([float(i)]) for i in range(12000)}
torch.save(big, os.path.join(out, "legacy_big.pt"), _use_new_zipfile_serialization=False)
