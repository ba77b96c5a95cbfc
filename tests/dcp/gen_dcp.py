"""Distributed checkpoints written by real torch.distributed.checkpoint, read by statedict.

    gen_dcp.py STATEDICT WORKDIR

Writes DCP folders with dcp.save from 1, 2 and 4 processes (torch.multiprocessing.spawn, gloo
on 127.0.0.1, one spawn per world size): model state_dicts, a general checkpoint with Adam
state and non-tensor values, replicated tensors, DTensor row- and column-sharded tensors with
uneven and empty shards, 0-dim tensors. For each folder, torch's own
format_utils.dcp_to_torch_save gives expected.pt; `statedict convert FOLDER got.pt` must give
the same tree: every key in the same order, the same container types, dtypes, shapes and values.
`statedict ls` and `statedict verify` must accept the folder, ls (which reads only .metadata
and the bytes items) giving the same text as `ls --verify-crc` (which reads every item); the model folders also convert to
safetensors and to a Hugging Face model folder holding the same tensors.
Exit 0 on success, 1 on a mismatch.
"""
import os
import shutil
import subprocess
import sys

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
import torch.multiprocessing as mp
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save
from gloo import done, init, rendezvous

STATEDICT, WORK = sys.argv[1:3]


def model_sd(seed):
    torch.manual_seed(seed)
    m = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3),
                            torch.nn.BatchNorm1d(3))
    return m, m.state_dict()


def general(seed):
    m, _ = model_sd(seed)
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    m(torch.randn(4, 6)).sum().backward()
    opt.step()
    return {"model": m.state_dict(), "optim": opt.state_dict(), "epoch": 3, "loss": 0.25,
            "tag": "run-a", "history": [0.9, 0.5], "big": 2 ** 40, "pair": (1, "x")}


def cases(rank, world):
    from torch.distributed.tensor import DTensor, Shard
    from torch.distributed.device_mesh import init_device_mesh
    mesh = init_device_mesh("cpu", (world,))

    def shard(full, d):  # this rank's torch.chunk piece, as DTensor's Shard(d) places it
        n = full.shape[d]
        step = -(-n // world)
        start = min(rank * step, n)
        local = full.narrow(d, start, min(step, n - start)).clone()
        return DTensor.from_local(local, mesh, [Shard(d)], run_check=False, shape=full.shape,
                                  stride=full.stride())
    out = {}
    _, out["model"] = model_sd(0)        # replicated on every rank: deduplicated
    out["general"] = general(1)
    torch.manual_seed(2)
    rows = torch.arange(9 * 5, dtype=torch.float32).reshape(9, 5)   # 9 rows: uneven / empty
    cols = torch.arange(3 * 10, dtype=torch.int64).reshape(3, 10)  # 10 cols: 3,3,3,1 over 4
    cube = torch.randn(2, 3, 7, dtype=torch.float64)
    half = torch.randn(5, 2).to(torch.bfloat16)
    wide = torch.randn(130, 257)   # chunks of whole rows past 4 KiB: read straight from the file
    out["sharded"] = {
        "rows": shard(rows, 0),
        "cols": shard(cols, 1),
        "cube": shard(cube, 2),
        "half": shard(half, 0),
        "wide": shard(wide, 0),
        "tall": shard(wide.t().contiguous(), 1),
        "bias": torch.arange(4, dtype=torch.float32),   # plain: replicated
        "scale": torch.tensor(1.5),                     # 0-dim
        "step": 7,
        "meta": {"name": "s", "flags": [True, False, None], "nested": {"k": [1, 2]}},
        "lst": [torch.ones(2), torch.zeros(3, dtype=torch.int32)],
    }
    return out


def worker(rank, world, store, root):
    init(rank, world, store)
    for name, sd in cases(rank, world).items():
        dcp.save(sd, checkpoint_id=os.path.join(root, f"{name}_{world}"))
    dist.barrier()
    done()


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


def run(*args):
    p = subprocess.run([str(a) for a in args], capture_output=True, text=True)
    check(p.returncode == 0, f"{' '.join(map(str, args))} exited {p.returncode}: "
          f"{p.stderr[-1500:]}")
    return p


if __name__ == "__main__":
    shutil.rmtree(WORK, ignore_errors=True)
    os.makedirs(WORK)
    worker(0, 1, rendezvous(), WORK)  # one process: this one (saves a child's start-up)
    for world in (2, 4):
        mp.spawn(worker, args=(world, rendezvous(), WORK), nprocs=world, join=True)
    folders = sorted(d for d in os.listdir(WORK) if os.path.isdir(os.path.join(WORK, d)))
    check(len(folders) == 9, f"folders {folders}")
    for d in folders:
        folder = os.path.join(WORK, d)
        exp, got = folder + ".expected.pt", folder + ".got.pt"
        dcp_to_torch_save(folder, exp)
        # ls lists from .metadata (and the bytes items); --verify-crc makes it read every item:
        # both listings must be the same text
        lazy, full = run(STATEDICT, "ls", folder), run(STATEDICT, "ls", "--verify-crc", folder)
        check(lazy.stdout == full.stdout and "tensor" in lazy.stdout,
              f"{d}: ls from .metadata\n{lazy.stdout}\ndiffers from the full listing\n{full.stdout}")
        run(STATEDICT, "verify", folder)
        run(STATEDICT, "convert", folder, got)
        if os.path.exists(got):
            same(torch.load(exp, weights_only=False), torch.load(got, weights_only=False), d)
        if d.startswith("model_"):  # to safetensors and to a model folder
            from safetensors.torch import load_file
            st, hf = folder + ".safetensors", folder + ".hf/"
            run(STATEDICT, "convert", folder, st)
            run(STATEDICT, "convert", folder, hf)
            want = torch.load(exp, weights_only=False)
            for out in (st, os.path.join(hf, "model.safetensors")):
                if os.path.exists(out):
                    got_st = load_file(out)
                    check(sorted(got_st) == sorted(want), f"{out}: keys {sorted(got_st)}")
                    for k in want:
                        if k in got_st:
                            same(want[k], got_st[k], f"{out}:{k}")
    print(f"{len(folders)} folders, {len(failures)} failures")
    sys.exit(1 if failures else 0)
