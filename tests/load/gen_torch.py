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
torch.save({"base": base, "view": base[2:8].view(2, 3), "tview": base.view(4, 6).t()},
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
