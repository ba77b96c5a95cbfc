"""Distributed checkpoint folders written by statedict, read by real torch.

    write_dcp.py STATEDICT WORKDIR

A general checkpoint (model state_dict, Adam state, non-tensor values, nested lists, a tuple, a
0-dim and an empty tensor, a transposed view) is torch.save'd, then converted by
`statedict convert --format dcp`. Checked against torch's own torch_save_to_dcp of the same
file: the folder's file names, Metadata version, state_dict_metadata keys and storage_data keys
in the same order, the same items in the same file order; dcp_to_torch_save of both gives the
same tree (keys, order, types, dtypes, values); dcp.load fills a state dict of the original
structure with the original values from 1 process and from 2 processes (gloo on 127.0.0.1).
Exit 0 on success, 1 on a mismatch.
"""
import copy
import os
import shutil
import subprocess
import sys

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
import torch.multiprocessing as mp
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save, torch_save_to_dcp
from gloo import done, init, rendezvous

STATEDICT, WORK = sys.argv[1:3]
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print(f"FAIL: {what}")


def same(a, b, path):
    if type(a) is not type(b):
        check(False, f"{path}: type {type(a).__name__} vs {type(b).__name__}")
    elif isinstance(a, torch.Tensor):
        check(a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b),
              f"{path}: tensor {a.dtype}{tuple(a.shape)} vs {b.dtype}{tuple(b.shape)} or values")
    elif isinstance(a, dict):
        check(list(a) == list(b), f"{path}: keys {list(a)} vs {list(b)}")
        for k in a:
            if k in b:
                same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        check(len(a) == len(b), f"{path}: length {len(a)} vs {len(b)}")
        for i, (x, y) in enumerate(zip(a, b)):
            same(x, y, f"{path}[{i}]")
    else:
        check(a == b, f"{path}: {a!r} vs {b!r}")


def checkpoint():
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    m(torch.randn(4, 6)).sum().backward()
    opt.step()
    big = torch.arange(24, dtype=torch.float64).reshape(4, 6)
    return {"model": m.state_dict(), "optim": opt.state_dict(), "epoch": 3, "loss": 0.25,
            "tag": "run", "pair": (1, "x"), "history": [0.9, 0.5],
            "extra": {"t": big.t(), "h": torch.ones(3, dtype=torch.bfloat16),
                      "z": torch.zeros(0, 4), "s": torch.tensor(7, dtype=torch.int32),
                      "lst": [torch.ones(2), {"k": torch.zeros(1)}], "empty": {}}}


def zeroed(sd):
    out = copy.deepcopy(sd)

    def z(x):
        if isinstance(x, torch.Tensor):
            return torch.zeros_like(x)
        if isinstance(x, dict):
            return {k: z(v) for k, v in x.items()}
        if isinstance(x, list):
            return [z(v) for v in x]
        return x
    return z(out)


def values_equal(want, got, path):
    if isinstance(want, torch.Tensor):
        check(torch.equal(want, got), f"{path}: values differ after dcp.load")
    elif isinstance(want, dict):
        for k in want:
            values_equal(want[k], got[k], f"{path}.{k}")
    elif isinstance(want, list):
        for i, (x, y) in enumerate(zip(want, got)):
            values_equal(x, y, f"{path}[{i}]")


def loader(rank, world, store, folder, src, q):
    init(rank, world, store)
    want = torch.load(src, weights_only=False)
    target = zeroed(want)
    dcp.load(target, checkpoint_id=folder)
    bad = []
    global failures
    failures = bad
    values_equal(want, target, f"rank{rank}")
    q.put((rank, bad))
    done()


if __name__ == "__main__":
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    src = os.path.join(WORK, "src.pt")
    sd = checkpoint()
    torch.save(sd, src)
    ours, ref = os.path.join(WORK, "ours"), os.path.join(WORK, "ref")
    p = subprocess.run([STATEDICT, "convert", "--format", "dcp", src, ours], capture_output=True,
                       text=True)
    check(p.returncode == 0, f"convert --format dcp exited {p.returncode}: {p.stderr}")
    torch_save_to_dcp(src, ref)
    check(sorted(os.listdir(ours)) == sorted(os.listdir(ref)),
          f"files {sorted(os.listdir(ours))} vs {sorted(os.listdir(ref))}")
    mo, mr = FileSystemReader(ours).read_metadata(), FileSystemReader(ref).read_metadata()
    check(getattr(mo, "version", None) == "1.0.0", f"version {getattr(mo, 'version', None)}")
    check(list(mo.state_dict_metadata) == list(mr.state_dict_metadata),
          f"state_dict_metadata order {list(mo.state_dict_metadata)} vs "
          f"{list(mr.state_dict_metadata)}")
    check(mo.planner_data == mr.planner_data, "planner_data differs")
    check([(k.fqn, k.offset) for k in mo.storage_data] ==
          [(k.fqn, k.offset) for k in mr.storage_data], "storage_data order differs")
    order = lambda m: [k.fqn for k, v in sorted(m.storage_data.items(),
                                                 key=lambda kv: kv[1].offset)]
    check(order(mo) == order(mr), f"item order {order(mo)} vs {order(mr)}")
    for k, v in mr.state_dict_metadata.items():
        w = mo.state_dict_metadata.get(k)
        check(type(w) is type(v), f"{k}: metadata type")
        if hasattr(v, "size"):
            check(w.size == v.size and w.properties.dtype == v.properties.dtype and
                  [(c.offsets, c.sizes) for c in w.chunks] ==
                  [(c.offsets, c.sizes) for c in v.chunks], f"{k}: tensor metadata")
    back_o, back_r = os.path.join(WORK, "ours.pt"), os.path.join(WORK, "ref.pt")
    dcp_to_torch_save(ours, back_o)
    dcp_to_torch_save(ref, back_r)
    same(torch.load(back_r, weights_only=False), torch.load(back_o, weights_only=False), "back")
    # dcp.load from one process (no process group) into the original structure
    target = zeroed(sd)
    dcp.load(target, checkpoint_id=ours)
    values_equal(sd, target, "load1")
    same(sd["epoch"], target["epoch"], "load1.epoch")
    same(sd["pair"], target["pair"], "load1.pair")
    # and from two
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    mp.spawn(loader, args=(2, rendezvous(), ours, src, q), nprocs=2, join=True)
    for _ in range(2):
        rank, bad = q.get()
        for b in bad:
            check(False, b)
    print(f"{len(failures)} failures")
    sys.exit(1 if failures else 0)
