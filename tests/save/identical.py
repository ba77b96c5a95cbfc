#!/usr/bin/python3
"""Byte-identity of statedict's writer against torch.save.

usage: identical.py [--torch2] [--content-only] SDICT_RESAVE WORKDIR

The torch running this script writes a set of checkpoints into WORKDIR/torch/<name>; the
driver loads each with sdict_load and saves it with sdict_save to WORKDIR/sdict/<name> (same
file name, so the same archive folder name): in torch 1.13's layout by default (run it with
torch 1.13), in torch 2.7+'s layout with --torch2 (run it with torch 2.14). Module state_dicts
(LeNet, resnet18, a BatchNorm model), an AdamW general checkpoint and a file of the Python
types statedict keeps (torch.Size, frozenset, bytearray) MUST come out byte-identical; the
other checkpoints and optimizer states are compared and reported, and each must at least load
in torch with equal content (with torch.load's defaults, unless the file holds values torch's
weights-only unpickler refuses). --content-only only reports byte differences: for torch
versions whose layout statedict does not write (2.6 writes neither 1.13's nor 2.7's records).
Exits 77 when torch is unavailable.
"""
import collections
import os
import pickletools
import subprocess
import sys
import zipfile

try:
    import torch
    import torch.nn as nn
except Exception as e:  # noqa: BLE001 - any import failure means "no torch here"
    print(f"SKIP: cannot import torch with {sys.executable}: {e}")
    sys.exit(77)


sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "examples"))
from recipe_net import TheModelClass  # noqa: E402


class Tied(nn.Module):
    """Embedding and output projection sharing one weight (tied weights)."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(20, 8)
        self.out = nn.Linear(8, 20, bias=False)
        self.out.weight = self.emb.weight


def bn_model():
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Flatten(), nn.Linear(8 * 6 * 6, 10), nn.BatchNorm1d(10))


def train_steps(model, opt, shape, steps=2):
    for _ in range(steps):
        opt.zero_grad()
        model(torch.randn(*shape)).sum().backward()
        opt.step()


def generate(d):
    """Writes the torch files; returns (name, required, same_content, driver options) tuples."""
    os.makedirs(d, exist_ok=True)
    cases = []

    def save(obj, name, required, same_content=True, options=(), **kw):
        torch.save(obj, os.path.join(d, name), **kw)
        cases.append((name, required, same_content, list(options)))

    torch.manual_seed(0)
    lenet = TheModelClass()
    save(lenet.state_dict(), "lenet.pt", True)
    try:
        import torchvision
        torch.manual_seed(0)
        save(torchvision.models.resnet18(weights=None).state_dict(), "resnet18.pth", True)
    except Exception as e:  # noqa: BLE001
        print(f"NOTE: torchvision unavailable ({e}); resnet18 case not run")
    torch.manual_seed(0)
    bn = bn_model()
    bn.train()
    bn(torch.randn(4, 3, 8, 8))  # running stats and num_batches_tracked move
    save(bn.state_dict(), "bn_model.pt", True)

    # Reported cases: general checkpoints and optimizer states.
    torch.manual_seed(0)
    save(Tied().state_dict(), "tied.pt", False)
    adam = torch.optim.Adam(lenet.parameters(), lr=1e-3)
    train_steps(lenet, adam, (2, 3, 32, 32))
    save(adam.state_dict(), "adam.pt", False)
    sgd_model = TheModelClass()
    sgd = torch.optim.SGD(sgd_model.parameters(), lr=0.1, momentum=0.9)
    train_steps(sgd_model, sgd, (2, 3, 32, 32))
    save(sgd.state_dict(), "sgd_momentum.pt", False)
    save({"epoch": 3, "model_state_dict": lenet.state_dict(),
          "optimizer_state_dict": adam.state_dict(), "loss": 0.4321}, "checkpoint.pth.tar", False)
    save({"epoch": 3, "model_state_dict": bn.state_dict(), "loss": torch.tensor(0.25)},
         "checkpoint_tensor_loss.tar", False)
    # two param groups share the defaults' objects (betas tuple), AMSGrad adds a state key,
    # a scheduler state carries floats and lists
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    adamw = torch.optim.AdamW([{"params": mlp[0].parameters()},
                               {"params": mlp[1].parameters(), "lr": 0.1}], amsgrad=True)
    train_steps(mlp, adamw, (5, 4))
    sched = torch.optim.lr_scheduler.StepLR(adamw, 3)
    save({"opt": adamw.state_dict(), "sched": sched.state_dict(), "model": mlp.state_dict()},
         "adamw_groups_sched.pt", False)
    # the recipe's general checkpoint with AdamW (its step counts, moments, float
    # hyperparameters and betas tuple)
    torch.manual_seed(0)
    net = TheModelClass()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.01)
    train_steps(net, opt, (2, 3, 32, 32), steps=3)
    save({"epoch": 3, "model_state_dict": net.state_dict(),
          "optimizer_state_dict": opt.state_dict(), "loss": 0.4321}, "adamw_checkpoint.tar", True)
    save({f"w{i}": torch.full((2,), float(i)) for i in range(1000)}, "dict1000.pt", False)
    save(collections.OrderedDict((f"w{i}", torch.tensor(i)) for i in range(1001)),
         "odict1001.pt", False)
    # Python types kept through the load (sdict_pytype); the frozenset needs
    # SDICT_SAVE_ALLOW_NOT_WEIGHTS_ONLY; one-character strs and one-byte bytes are singletons
    save({"size": torch.Size([2, 3]), "size0": torch.Size([]), "fs": frozenset({1}),
          "fs0": frozenset(), "ba": bytearray(b"x\xff"), "ba0": bytearray(), "b1": b"q",
          "s": ["x", "x", "", "", "\xe9"]},
         "python_types.pt", True, options=["--allow-not-weights-only"])
    # tensors of every kind: views, requires_grad, Parameters, meta, dtype values, 0-dim,
    # empty, and (torch 2.x) the dtypes only UntypedStorage + _rebuild_tensor_v3 carry
    base = torch.arange(24, dtype=torch.float32)
    misc = {"view": base[2:8].view(2, 3), "t": base.view(4, 6).t(), "base": base,
            "grad": torch.ones(2, requires_grad=True), "meta": torch.empty(2, 3, device="meta"),
            "param": nn.Parameter(torch.zeros(3), requires_grad=False), "dtypes": [torch.bool, torch.bfloat16],
            "scalar": torch.tensor(7), "empty": torch.empty(0, 4), "c": torch.ones(2, dtype=torch.complex64),
            "h": torch.ones(2, dtype=torch.bfloat16), "b": torch.tensor([True, False])}
    if hasattr(torch, "uint16") and hasattr(torch, "float8_e4m3fn"):
        u16 = torch.arange(6, dtype=torch.int32).to(torch.uint16)
        misc.update({"u16": u16, "u16_view": u16[2:], "u32": torch.ones(2, dtype=torch.uint32),
                     "u64": torch.ones(2, dtype=torch.uint64),
                     "f8": torch.ones(3).to(torch.float8_e4m3fn),
                     "f8b": torch.ones(3).to(torch.float8_e5m2), "v3": [torch.uint16, torch.float8_e5m2]})
    save(misc, "tensors.pt", True)
    # payloads that start like a zip data descriptor: torch 2.x's serialization id folds their
    # next 4 bytes too (its write callback cannot tell them from descriptors)
    save({"pk": torch.tensor([0x50, 0x4B, 0x07, 0x08, 1, 2, 3, 4], dtype=torch.uint8),
          "pk4": torch.tensor([0x50, 0x4B, 0x07, 0x08], dtype=torch.uint8),
          "empty": torch.empty(0)}, "pk_payload.pt", True)
    # Expected to differ: other container formats/protocols (statedict writes zip files with
    # protocol 2), and b'', which torch pickles as builtins.bytes() that its own weights-only
    # unpickler refuses (statedict writes _codecs.encode('', 'latin1')).
    save({"w": torch.ones(2)}, "protocol4.pt", False, pickle_protocol=4)
    save({"w": torch.ones(2)}, "legacy_format.pt", False, _use_new_zipfile_serialization=False)
    save({"empty": b"", "w": torch.ones(2)}, "empty_bytes.pt", False)
    return cases


def first_diff(a, b):
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def pickle_ops(path):
    with zipfile.ZipFile(path) as z:
        name = [n for n in z.namelist() if n.endswith("/data.pkl")][0]
        return [(op.name, arg) for op, arg, _ in pickletools.genops(z.read(name))]


def explain(ref, ours):
    """Where two files differ: record names, then the first differing pickle opcode."""
    if not zipfile.is_zipfile(ref):
        return "torch's file is not a zip archive (legacy format)"
    zr, zo = zipfile.ZipFile(ref), zipfile.ZipFile(ours)
    if [n.split("/", 1)[1] for n in zr.namelist()] != [n.split("/", 1)[1] for n in zo.namelist()]:
        return f"records differ: {zr.namelist()[:4]}... vs {zo.namelist()[:4]}..."
    for n in zr.namelist():
        if zr.read(n) != zo.read(n) and not n.endswith(("data.pkl", "serialization_id")):
            return f"payload of {n} differs"
    a, b = pickle_ops(ref), pickle_ops(ours)
    i = first_diff(a, b)
    return (f"data.pkl: first differing opcode #{i}: torch {a[i:i + 3]} vs statedict "
            f"{b[i:i + 3]} ({len(a)} vs {len(b)} opcodes)")


def same_content(x, y):
    if isinstance(x, torch.Tensor):
        if not (type(x) is type(y) and x.dtype == y.dtype and x.shape == y.shape
                and x.stride() == y.stride() and x.storage_offset() == y.storage_offset()
                and x.requires_grad == y.requires_grad and x.is_meta == y.is_meta):
            return False
        if x.is_meta:
            return True
        # float8 and uint16-64 lack equal() in some versions: compare the bytes
        def raw(t):
            return t.detach().contiguous().view(-1).view(torch.uint8)
        return x.numel() == 0 or torch.equal(raw(x), raw(y))
    if isinstance(x, dict):
        return (type(x) is type(y) and list(x.keys()) == list(y.keys())
                and all(same_content(x[k], y[k]) for k in x)
                and getattr(x, "_metadata", None) == getattr(y, "_metadata", None))
    if isinstance(x, (list, tuple)):
        return (type(x) is type(y) and len(x) == len(y)
                and all(same_content(a, b) for a, b in zip(x, y)))
    return type(x) is type(y) and x == y


def load(path, options):
    # statedict's files load with torch.load's defaults (weights_only=True since 2.6) unless
    # they hold values torch's weights-only unpickler refuses
    if "--allow-not-weights-only" in options:
        return torch.load(path, weights_only=False)
    return torch.load(path)


def main():
    args = sys.argv[1:]
    torch2 = "--torch2" in args
    content_only = "--content-only" in args
    args = [a for a in args if a not in ("--torch2", "--content-only")]
    if len(args) != 2:
        print(__doc__)
        return 2
    driver, work = args
    print(f"torch {torch.__version__} under Python {sys.version.split()[0]}; statedict writes "
          f"torch {'2.7+' if torch2 else '1.13'}'s layout")
    tdir, sdir = os.path.join(work, "torch"), os.path.join(work, "sdict")
    os.makedirs(sdir, exist_ok=True)
    cases = generate(tdir)
    failures, identical, differing = [], [], []
    for name, required, content_kept, options in cases:
        required = required and not content_only
        ref, ours = os.path.join(tdir, name), os.path.join(sdir, name)
        cmd = [driver] + (["--torch2"] if torch2 else []) + options + ["resave", ref, ours]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            if required or content_kept:
                failures.append(f"{name}: driver failed: {r.stderr.strip()}")
            else:
                print(f"NOT SAVED  {name}: {r.stderr.strip()}")
            continue
        with open(ref, "rb") as f:
            a = f.read()
        with open(ours, "rb") as f:
            b = f.read()
        if a == b and not content_kept:
            failures.append(f"{name}: expected to differ but is identical (test is stale)")
        if a == b:
            identical.append(name)
            print(f"IDENTICAL  {name} ({len(a)} bytes)")
        else:
            why = explain(ref, ours)
            line = f"{name}: {len(a)} vs {len(b)} bytes, first difference at byte {first_diff(a, b)}; {why}"
            (failures if required else differing).append(line)
            print(("FAIL       " if required else "DIFFERENT  ") + line)
        # Whatever the bytes, torch must read back the same content.
        # torch's own files need weights_only=False on 2.x when they use protocol 4 or b''
        if content_kept and not same_content(torch.load(ref, weights_only=False),
                                             load(ours, options)):
            failures.append(f"{name}: torch.load content differs from the original")
    print(f"\n{len(identical)}/{len(cases)} files byte-identical")
    for f in failures:
        print("FAILURE:", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
