#!/usr/bin/python3
"""`statedict extract` of pickled optimizers (torch.save(optimizer)) against torch itself.

usage: optim_object_check.py STATEDICT WORKDIR

SGD with momentum over two param groups (one with its own lr) and Adam over the same
parameters, each after one step, saved whole with torch.save(optimizer), and a checkpoint
{'model': model, 'optimizer': opt}: the extracted file, loaded with weights_only=True, must
equal optimizer.state_dict() (state keyed by parameter index, param_groups with 'params'
indices last; every value, dtype and type equal), the checkpoint {'model': model.state_dict(),
'optimizer': opt.state_dict()}; `extract --key` of a plain value warns naming the key.
Exits 77 when torch is unavailable.
"""
import os
import shutil
import subprocess
import sys

try:
    import torch
    import torch.nn as nn
except ImportError as e:
    print("skip: %s" % e)
    sys.exit(77)

failures = []


def same(a, b, where):
    if type(a) is not type(b) and not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
        failures.append("%s: %s != %s" % (where, type(a).__name__, type(b).__name__))
    elif isinstance(a, dict):
        if list(a.keys()) != list(b.keys()):
            failures.append("%s: keys %s != %s" % (where, list(a.keys()), list(b.keys())))
        else:
            for k in a:
                same(a[k], b[k], "%s[%r]" % (where, k))
    elif isinstance(a, (list, tuple)):
        if len(a) != len(b):
            failures.append("%s: length %d != %d" % (where, len(a), len(b)))
        for i, (x, y) in enumerate(zip(a, b)):
            same(x, y, "%s[%d]" % (where, i))
    elif isinstance(a, torch.Tensor):
        if a.dtype != b.dtype or a.shape != b.shape or not torch.equal(a, b):
            failures.append("%s: tensors differ" % where)
    elif a != b:
        failures.append("%s: %r != %r" % (where, a, b))


def extract(exe, src, out, *extra):
    r = subprocess.run([exe, "extract", *extra, src, out], capture_output=True)
    err = r.stderr.decode("utf-8", "replace")
    if r.returncode != 0:
        failures.append("extract %s: exit %d: %s" % (src, r.returncode, err))
        return None, err
    try:
        return torch.load(out, weights_only=True), err
    except Exception as e:
        # torch 1.13's weights_only unpickler has no BINFLOAT (an lr of 0.1): it cannot load
        # optimizer.state_dict()'s own torch.save either; this file is statedict's output
        if not torch.__version__.startswith("1.") or "operand 71" not in str(e):
            raise
        return torch.load(out), err


def main():
    exe, work = sys.argv[1], sys.argv[2]
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    sgd = torch.optim.SGD([{"params": m[0].parameters()},
                           {"params": m[1].parameters(), "lr": 0.5}], lr=0.1, momentum=0.9)
    adam = torch.optim.Adam(m.parameters(), lr=1e-3)
    for opt in (sgd, adam):
        m(torch.randn(2, 3)).sum().backward()
        opt.step()
    for name, opt in (("sgd", sgd), ("adam", adam)):
        p = os.path.join(work, name + ".pt")
        torch.save(opt, p)
        got, _ = extract(exe, p, os.path.join(work, name + ".out.pt"))
        if got is not None:
            same(got, opt.state_dict(), name)
            print("ok %s: %d states, %d groups" % (name, len(got["state"]),
                                                   len(got["param_groups"])))
    p = os.path.join(work, "ckpt.pt")
    torch.save({"model": m, "optimizer": sgd, "epoch": 3}, p)
    got, _ = extract(exe, p, os.path.join(work, "ckpt.out.pt"))
    if got is not None:
        same(dict(got["model"]), dict(m.state_dict()), "ckpt.model")
        same(got["optimizer"], sgd.state_dict(), "ckpt.optimizer")
        print("ok checkpoint")
    got, err = extract(exe, p, os.path.join(work, "epoch.out.pt"), "--key", "epoch")
    if "key 'epoch'" not in err:
        failures.append("--key epoch: warning does not name the key: %r" % err)
    for f in failures:
        print("FAIL " + f)
    print("%d failure(s)" % len(failures))
    sys.exit(1 if failures else 0)


main()
