"""Checks DCP folders written by examples/dcp_mpi (statedict_mpi) with real torch, and writes one
folder with torch for the MPI loader. Run with the generation's python (torch 2.6 / 2.14):

  mpi_check.py check WORK FOLDER:SAVED_RANKS ...   each folder: dcp_to_torch_save gives the full
      state dict (values from the formula of examples/dcp_mpi.c); dcp.load from a different
      number of gloo ranks (127.0.0.1) into DTensors sharded by rows and by columns gives every
      rank its shard, the replicated tensors and the non-tensor values
  mpi_check.py save WORK DIR                       torch's dcp.save from 2 gloo ranks of the same
      state dict (weights row-sharded DTensors), for the MPI loader

Exit status 0 when every check passed.
"""
import os
import sys
import traceback

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
import torch.multiprocessing as mp
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save
from gloo import done, init, rendezvous

SHAPES = {"model.fc1.weight": (10, 7), "model.fc1.bias": (10,),
          "model.fc2.weight": (5, 10), "model.fc2.bias": (5,)}
PARAMS = list(SHAPES)


def specs():
    """(fqn, k, shape) of every tensor, k as examples/dcp_mpi.c numbers them."""
    out = [(p, k, SHAPES[p]) for k, p in enumerate(PARAMS)]
    k = len(PARAMS)
    for i, p in enumerate(PARAMS):
        out += [(f"optim.state.{i}.exp_avg", k, SHAPES[p]),
                (f"optim.state.{i}.exp_avg_sq", k + 1, SHAPES[p]),
                (f"optim.state.{i}.step", k + 2, ())]
        k += 3
    return out


def full(k, shape):
    if shape == ():
        return torch.tensor(3.0)
    n = 1
    for s in shape:
        n *= s
    return (k * 1000.0 + torch.arange(n, dtype=torch.float64) / 4).to(torch.float32).reshape(shape)


GROUP = {"lr": 0.001, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0, "amsgrad": False,
         "params": [0, 1, 2, 3]}


def nest(flat, blank):
    """The nested state dict of flat fqn -> tensor (optim.state keys as ints, as torch's)."""
    sd = {"model": {}, "optim": {"state": {}, "param_groups": [dict(GROUP)]}, "epoch": 3,
          "tag": "mpi"}
    if blank:
        sd["optim"]["param_groups"] = [{"lr": 0.0, "betas": (0.0, 0.0), "eps": 0.0,
                                        "weight_decay": 1.0, "amsgrad": True, "params": []}]
        sd["epoch"], sd["tag"] = 0, ""
    for fqn, t in flat.items():
        if fqn.startswith("model."):
            sd["model"][fqn[6:]] = t
        else:
            _, _, i, name = fqn.split(".")
            sd["optim"]["state"].setdefault(int(i), {})[name] = t
    return sd


def sharded(rank, world, mesh, dim, blank):
    """This rank's state dict: 2-d tensors as DTensor Shard(dim) pieces (torch.chunk rule)."""
    from torch.distributed.tensor import DTensor, Shard
    flat, expect = {}, {}
    for fqn, k, shape in specs():
        t = full(k, shape)
        if len(shape) == 2:
            n = shape[dim]
            step = -(-n // world)
            start = min(rank * step, n)
            local = t.narrow(dim, start, min(step, n - start)).clone()
            expect[fqn] = local.clone()
            if blank:
                local.fill_(-1.0)
            flat[fqn] = DTensor.from_local(local, mesh, [Shard(dim)], run_check=False,
                                           shape=t.shape, stride=t.stride())
        else:
            expect[fqn] = t.clone()
            flat[fqn] = torch.full_like(t, -1.0) if blank else t
    return flat, expect


def loader(rank, world, store, jobs, q):
    init(rank, world, store)
    from torch.distributed.device_mesh import init_device_mesh
    mesh = init_device_mesh("cpu", (world,))
    bad = []
    try:
        for folder, dim in jobs:
            flat, expect = sharded(rank, world, mesh, dim, True)
            sd = nest(flat, True)
            dcp.load(sd, checkpoint_id=folder)
            for fqn, want in expect.items():
                if fqn.startswith("model."):
                    got = sd["model"][fqn[6:]]
                else:
                    _, _, i, name = fqn.split(".")
                    got = sd["optim"]["state"][int(i)][name]
                got = got.to_local() if hasattr(got, "to_local") else got
                if got.shape != want.shape or not torch.equal(got, want):
                    bad.append(f"{folder} dim {dim} rank {rank}/{world}: {fqn} differs")
            if sd["optim"]["param_groups"] != [GROUP] or sd["epoch"] != 3 or sd["tag"] != "mpi":
                bad.append(f"{folder} rank {rank}/{world}: non-tensor values "
                           f"{sd['optim']['param_groups']} {sd['epoch']} {sd['tag']}")
    except Exception:
        bad.append(f"rank {rank}/{world}: {traceback.format_exc()[-1500:]}")
    q.put(bad)
    dist.barrier()
    done()


def saver(rank, world, store, folder):
    init(rank, world, store)
    from torch.distributed.device_mesh import init_device_mesh
    mesh = init_device_mesh("cpu", (world,))
    flat, _ = sharded(rank, world, mesh, 0, False)
    dcp.save(nest(flat, False), checkpoint_id=folder)
    dist.barrier()
    done()


def check_full(work, folder, fails):
    out = os.path.join(work, os.path.basename(folder) + ".pt")
    dcp_to_torch_save(folder, out)
    sd = torch.load(out, weights_only=False)
    want = {"model": {}, "optim": {"state": {}, "param_groups": [GROUP]}, "epoch": 3, "tag": "mpi"}
    for fqn, k, shape in specs():
        if fqn.startswith("model."):
            want["model"][fqn[6:]] = full(k, shape)
        else:
            _, _, i, name = fqn.split(".")
            want["optim"]["state"].setdefault(i, {})[name] = full(k, shape)

    def same(a, b, path):
        if isinstance(b, torch.Tensor):
            if not (isinstance(a, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape
                    and torch.equal(a, b)):
                fails.append(f"{folder}: dcp_to_torch_save {path} differs")
        elif isinstance(b, dict):
            if not isinstance(a, dict) or sorted(a) != sorted(b):
                fails.append(f"{folder}: dcp_to_torch_save {path} keys "
                             f"{sorted(a) if isinstance(a, dict) else type(a)} vs {sorted(b)}")
                return
            for k in b:
                same(a[k], b[k], f"{path}.{k}")
        elif isinstance(b, list):
            if not isinstance(a, list) or len(a) != len(b):
                fails.append(f"{folder}: dcp_to_torch_save {path}: {a!r} vs {b!r}")
                return
            for i, (x, y) in enumerate(zip(a, b)):
                same(x, y, f"{path}[{i}]")
        elif a != b or type(a) is not type(b):
            fails.append(f"{folder}: dcp_to_torch_save {path}: {a!r} vs {b!r}")
    same(sd, want, "")


def main():
    mode, work = sys.argv[1], sys.argv[2]
    if mode == "save":
        mp.spawn(saver, args=(2, rendezvous(), sys.argv[3]), nprocs=2, join=True)
        return 0
    fails, by_world = [], {}
    for arg in sys.argv[3:]:
        folder, saved = arg.rsplit(":", 1)
        check_full(work, folder, fails)
        # a loader rank count other than the save's: 3 for 1, 2 or 4 saving ranks
        load_world = 3 if int(saved) != 3 else 2
        by_world.setdefault(load_world, []).extend([(folder, 0), (folder, 1)])
    for world, jobs in by_world.items():
        q = mp.get_context("spawn").SimpleQueue()
        mp.spawn(loader, args=(world, rendezvous(), jobs, q), nprocs=world, join=True)
        for _ in range(world):
            fails.extend(q.get())
    for f in fails:
        print("FAIL:", f)
    print(f"{len(sys.argv) - 3} folders checked with torch {torch.__version__}: "
          f"{'FAILED' if fails else 'ok'}")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
