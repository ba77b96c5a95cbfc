#!/usr/bin/python3
"""Interop tests of the training layer against real PyTorch, driven through examples/train
and examples/seed_multi_model.

usage: optim_interop.py CASE TRAIN_OR_MULTI WORKDIR

  steps_<arch>_<opt>   torch writes an initial general checkpoint (model + optimizer with no
                       state yet) and a data file; `train --resume` runs 2 epochs (6 steps) in C,
                       torch runs the same 6 steps; parameters, buffers and optimizer state
                       agree within 1e-5 (relative to each tensor's largest magnitude), the
                       optimizer state_dict has torch's keys and group key order, and torch's
                       optimizer.load_state_dict accepts it. The command line passes wrong
                       hyperparameters on purpose: the checkpoint's must win.
  eps8_lenet_<opt>     Adam-family with the default eps=1e-8, where elements with |grad| ~ eps
                       make float32 results depend on summation order: C and torch float32
                       are both compared with torch in float64, and C must be within 3x
                       torch's own float32 error (plus 1e-5 relative) for every tensor.
  xresume_tc_<opt>     torch trains k steps and saves; C resumes for k more and saves; torch
                       loads that checkpoint: equal to torch's own 2k-step run.
  xresume_ct_<opt>     C trains k steps from the initial checkpoint; torch loads it and trains
                       k more: equal to C's own 2k-step run.
  multi_c2t            seed_multi_model writes two models and two optimizers in one file;
                       torch loads them into two modules (strict) and two optimizers.
  multi_t2c            torch writes such a file; seed_multi_model loads it and writes it back;
                       every tensor and hyperparameter is what torch wrote.
  print_state_dict     seed_print_state_dict --torch GEN prints exactly what the recipe's print
                       loops print in this torch for TheModelClass and SGD(lr=0.001,
                       momentum=0.9).
Dropout is off (p=0) everywhere. Exit 77 (skip) when torch is not importable.
"""
import os
import subprocess
import sys

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    import torch.optim as optim
except Exception as e:  # noqa: BLE001
    print(f"SKIP: torch not importable: {e}")
    sys.exit(77)

RTOL = 1e-5
# this torch's generation as the C programs name it ("1.13", "2.6", "2.14")
GEN = ".".join(torch.__version__.split("+")[0].split(".")[:2])
N, BS, EPOCHS = int(os.environ.get("OPTIM_N", 32)), int(os.environ.get("OPTIM_BS", 16)), int(os.environ.get("OPTIM_EPOCHS", 2))


sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "examples"))
from recipe_net import TheModelClass  # noqa: E402


class Net(TheModelClass):
    """The recipe's model under the name C's sdict_lenet_new gives it (error messages name it)."""


def mlp():
    return nn.Sequential(nn.Embedding(100, 16), nn.Flatten(), nn.Linear(16 * 8, 64),
                         nn.BatchNorm1d(64), nn.ReLU(), nn.Dropout(0.0), nn.Linear(64, 10))


# name -> (torch constructor kwargs, C optimizer name)
OPTS = {
    "sgd": (optim.SGD, dict(lr=0.05), "sgd"),
    "sgd_momentum": (optim.SGD, dict(lr=0.05, momentum=0.9), "sgd"),
    "sgd_nesterov": (optim.SGD, dict(lr=0.05, momentum=0.9, nesterov=True), "sgd"),
    "sgd_wd": (optim.SGD, dict(lr=0.05, momentum=0.8, dampening=0.1, weight_decay=1e-2), "sgd"),
    "sgd_maximize": (optim.SGD, dict(lr=0.01, momentum=0.5, maximize=True), "sgd"),
    # eps=1e-5, not the default 1e-8: Adam divides each gradient element by (|g| + eps), so
    # elements whose exact gradient is ~1e-9 (nearly dead ReLU units) turn float32 summation-
    # order noise (present between torch's own kernels too) into O(lr) differences. Measured:
    # with eps=1e-8 the only elements off by more than 1e-5 are those with |grad| < 1e-8.
    "adam": (optim.Adam, dict(lr=2e-3, eps=1e-5), "adam"),
    "adam_wd": (optim.Adam, dict(lr=2e-3, betas=(0.8, 0.99), eps=1e-5, weight_decay=1e-2), "adam"),
    "adamw": (optim.AdamW, dict(lr=2e-3, eps=1e-5, weight_decay=5e-2), "adamw"),
    "amsgrad": (optim.Adam, dict(lr=2e-3, eps=1e-5, amsgrad=True), "adam"),
    "adamw_amsgrad": (optim.AdamW, dict(lr=2e-3, eps=1e-5, amsgrad=True), "adamw"),
}


def make(arch, seed=0):
    torch.manual_seed(seed)
    model = Net() if arch == "lenet" else mlp()
    g = torch.Generator().manual_seed(seed + 1)
    if arch == "lenet":
        x = torch.randn(N, 3, 32, 32, generator=g)
    else:
        x = torch.randint(0, 100, (N, 8), generator=g)
    y = torch.randint(0, 10, (N,), generator=g)
    return model, x, y


def train_torch(model, opt, x, y, epochs):
    model.train()
    loss = None
    for _ in range(epochs):
        for s in range(0, len(x), BS):
            opt.zero_grad()
            loss = F.cross_entropy(model(x[s:s + BS]), y[s:s + BS])
            loss.backward()
            opt.step()
    return loss


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        print("FAIL: command failed:", " ".join(cmd), "\n", r.stdout, r.stderr)
        sys.exit(1)
    return r.stdout


def close(a, b, what, errors):
    a = a.detach().double()
    b = b.detach().double()
    if a.shape != b.shape:
        errors.append(f"{what}: shape {tuple(a.shape)} vs {tuple(b.shape)}")
        return
    # The floor 1e-2 (1e-7 absolute) makes tensors that are pure roundoff comparable: in the mlp the Linear
    # bias before BatchNorm has an exactly zero gradient, so its momentum buffer is noise ~1e-9.
    scale = max(b.abs().max().item() if b.numel() else 0.0, 1e-2)
    diff = (a - b).abs().max().item() if b.numel() else 0.0
    if not diff <= RTOL * scale:
        errors.append(f"{what}: max |diff| {diff:.3g} > {RTOL} * {scale:.3g}")


def compare_ckpt(c_model_sd, c_opt_sd, t_model, t_opt, errors, tag):
    t_sd = t_model.state_dict()
    if list(c_model_sd.keys()) != list(t_sd.keys()):
        errors.append(f"{tag}: model keys differ")
    for k, v in t_sd.items():
        if k in c_model_sd:
            if c_model_sd[k].dtype != v.dtype:
                errors.append(f"{tag}: {k} dtype {c_model_sd[k].dtype} vs {v.dtype}")
            close(c_model_sd[k], v, f"{tag}: {k}", errors)
    t_osd = t_opt.state_dict()
    for gi, (cg, tg) in enumerate(zip(c_opt_sd["param_groups"], t_osd["param_groups"])):
        if list(cg.keys()) != list(tg.keys()):
            errors.append(f"{tag}: group {gi} keys {list(cg.keys())} vs {list(tg.keys())}")
        for k in tg:
            if cg.get(k) != tg[k]:
                errors.append(f"{tag}: group {gi} {k}: {cg.get(k)!r} vs {tg[k]!r}")
    if list(c_opt_sd["state"].keys()) != list(t_osd["state"].keys()):
        errors.append(f"{tag}: state keys {list(c_opt_sd['state'])} vs {list(t_osd['state'])}")
    for i, ts in t_osd["state"].items():
        cs = c_opt_sd["state"].get(i, {})
        if list(cs.keys()) != list(ts.keys()):
            errors.append(f"{tag}: state[{i}] keys {list(cs.keys())} vs {list(ts.keys())}")
        for k, v in ts.items():
            cv = cs.get(k)
            if v is None or cv is None:
                if not (v is None and cv is None):
                    errors.append(f"{tag}: state[{i}][{k}] {cv!r} vs {v!r}")
                continue
            if k == "step" and (cv.dtype != v.dtype or cv.shape != v.shape):
                errors.append(f"{tag}: step {cv.dtype}{tuple(cv.shape)} vs {v.dtype}{tuple(v.shape)}")
            close(cv, v, f"{tag}: state[{i}][{k}]", errors)


def save_general(path, model, opt, epoch, loss):
    torch.save({"epoch": epoch, "model_state_dict": model.state_dict(),
                "optimizer_state_dict": opt.state_dict(), "loss": loss}, path)


def c_train(train, arch, cname, data, resume, out, epochs):
    # Deliberately wrong hyperparameters: the checkpoint's must win.
    cmd = [train, "--arch", arch, "--data", data, "--optimizer", cname, "--lr", "0.77",
           "--epochs", str(epochs), "--batch-size", str(BS), "--dropout", "0",
           "--resume", resume, "--checkpoint", out]
    if cname == "sgd":
        cmd += ["--momentum", "0.3"]
    return run(cmd)


def setup(work, arch, optname):
    ctor, kw, cname = OPTS[optname]
    model, x, y = make(arch)
    opt = ctor(model.parameters(), **kw)
    data = os.path.join(work, f"{arch}_data.pt")
    torch.save({"x": x, "y": y}, data)
    init = os.path.join(work, f"{arch}_{optname}_init.tar")
    save_general(init, model, opt, 0, 0.0)
    return model, opt, x, y, data, init, ctor, kw, cname


def case_steps(train, work, arch, optname):
    model, opt, x, y, data, init, _, _, cname = setup(work, arch, optname)
    out = os.path.join(work, f"{arch}_{optname}_c.tar")
    log = c_train(train, arch, cname, data, init, out, EPOCHS)
    loss = train_torch(model, opt, x, y, EPOCHS)
    ck = torch.load(out)
    errors = []
    if ck["epoch"] != EPOCHS:
        errors.append(f"epoch {ck['epoch']} != {EPOCHS}")
    last = float(log.strip().splitlines()[-2].split()[-1])
    if not abs(last - ck["loss"]) < 1e-6:
        errors.append(f"saved loss {ck['loss']} is not the printed one {last}")
    compare_ckpt(ck["model_state_dict"], ck["optimizer_state_dict"], model, opt, errors, "C vs torch")
    # torch resumes from the C file without complaint
    m2, _, _ = make(arch, seed=5)
    m2.load_state_dict(ck["model_state_dict"], strict=True)
    o2 = type(opt)(m2.parameters(), lr=0.5)
    o2.load_state_dict(ck["optimizer_state_dict"])
    compare_ckpt(m2.state_dict(), o2.state_dict(), model, opt, errors, "torch-loaded C file")
    print(f"{arch} {optname}: last batch loss torch {loss.item():.6f}")
    return errors


def case_eps8(train, work, arch, optname):
    ctor, kw, cname = OPTS[optname]
    kw = dict(kw, eps=1e-8)
    OPTS["eps8"] = (ctor, kw, cname)
    model, opt, x, y, data, init, _, _, _ = setup(work, arch, "eps8")
    m64 = Net().double() if arch == "lenet" else mlp().double()
    m64.load_state_dict(model.state_dict())
    o64 = ctor(m64.parameters(), **kw)
    out = os.path.join(work, f"{arch}_{optname}_eps8_c.tar")
    c_train(train, arch, cname, data, init, out, EPOCHS)
    train_torch(model, opt, x, y, EPOCHS)
    train_torch(m64, o64, x.double() if x.is_floating_point() else x, y, EPOCHS)
    ck = torch.load(out)["model_state_dict"]
    errors = []
    t32, t64 = model.state_dict(), m64.state_dict()
    for k, r in t64.items():
        if not r.is_floating_point():
            continue
        c_err = (ck[k].double() - r).abs().max().item()
        t_err = (t32[k].double() - r).abs().max().item()
        bound = RTOL * max(r.abs().max().item(), 1e-2) + 3 * t_err
        print(f"  {k:14s} |C-T64| {c_err:.2e}  |T32-T64| {t_err:.2e}")
        if not c_err <= bound:
            errors.append(f"{k}: |C - torch64| {c_err:.3g} > {bound:.3g}")
    return errors


def case_xresume(train, work, direction, optname):
    arch, k = "lenet", 1
    model, opt, x, y, data, init, ctor, kw, cname = setup(work, arch, optname)
    # reference: 2k epochs in one go, in the writer of the final state
    errors = []
    if direction == "tc":
        ref_m, _, _ = make(arch)
        ref_o = ctor(ref_m.parameters(), **kw)
        train_torch(ref_m, ref_o, x, y, 2 * k)
        loss = train_torch(model, opt, x, y, k)
        mid = os.path.join(work, f"xr_tc_{optname}_torch_k.tar")
        save_general(mid, model, opt, k, loss.item())
        out = os.path.join(work, f"xr_tc_{optname}_c_2k.tar")
        c_train(train, arch, cname, data, mid, out, k)
        ck = torch.load(out)
        m2, _, _ = make(arch, seed=9)
        m2.load_state_dict(ck["model_state_dict"])
        o2 = ctor(m2.parameters(), **kw)
        o2.load_state_dict(ck["optimizer_state_dict"])
        if ck["epoch"] != 2 * k:
            errors.append(f"epoch {ck['epoch']}")
        compare_ckpt(m2.state_dict(), o2.state_dict(), ref_m, ref_o, errors, "torch k + C k")
    else:
        c_ref = os.path.join(work, f"xr_ct_{optname}_c_2k.tar")
        c_train(train, arch, cname, data, init, c_ref, 2 * k)
        mid = os.path.join(work, f"xr_ct_{optname}_c_k.tar")
        c_train(train, arch, cname, data, init, mid, k)
        ck = torch.load(mid)
        model.load_state_dict(ck["model_state_dict"])
        opt.load_state_dict(ck["optimizer_state_dict"])
        train_torch(model, opt, x, y, k)
        ref = torch.load(c_ref)
        # the reference is C's 2k run; compare torch's continuation against it
        ref_m, _, _ = make(arch, seed=9)
        ref_m.load_state_dict(ref["model_state_dict"])
        ref_o = ctor(ref_m.parameters(), **kw)
        ref_o.load_state_dict(ref["optimizer_state_dict"])
        compare_ckpt(model.state_dict(), opt.state_dict(), ref_m, ref_o, errors, "C k + torch k")
    return errors


def multi_models():
    torch.manual_seed(3)
    a, b = Net(), mlp()
    return a, b


def case_multi(prog, work, direction):
    errors = []
    if direction == "c2t":
        path = os.path.join(work, "multi_c.tar")
        run([prog, "--save", path])
        ck = torch.load(path)
        a, b = multi_models()
        a.load_state_dict(ck["modelA_state_dict"], strict=True)
        b.load_state_dict(ck["modelB_state_dict"], strict=True)
        oa = optim.SGD(a.parameters(), lr=0.1)
        ob = optim.Adam(b.parameters())
        oa.load_state_dict(ck["optimizerA_state_dict"])
        ob.load_state_dict(ck["optimizerB_state_dict"])
        if list(ck.keys()) != ["modelA_state_dict", "modelB_state_dict",
                               "optimizerA_state_dict", "optimizerB_state_dict"]:
            errors.append(f"keys {list(ck.keys())}")
        if len(oa.state) != len(list(a.parameters())) or len(ob.state) != len(list(b.parameters())):
            errors.append("optimizer state missing after load")
        for p in a.parameters():
            if "momentum_buffer" not in oa.state[p] or oa.state[p]["momentum_buffer"] is None:
                errors.append("SGD momentum buffer missing")
                break
        for p in b.parameters():
            if oa is None or ob.state[p]["step"].item() != 1.0:
                errors.append("Adam step is not 1")
                break
        # both networks still run after loading, and optimizers step
        a.eval()
        b.eval()
        a(torch.zeros(1, 3, 32, 32))
        b(torch.zeros(2, 8, dtype=torch.long))
        if ob.param_groups[0]["betas"] != (0.5, 0.999) or oa.param_groups[0]["momentum"] != 0.9:
            errors.append(f"hyperparameters {ob.param_groups[0]['betas']} {oa.param_groups[0]['momentum']}")
    else:
        a, b = multi_models()
        oa = optim.SGD(a.parameters(), lr=0.01, momentum=0.9)
        ob = optim.Adam(b.parameters(), lr=2e-4, betas=(0.5, 0.999), amsgrad=True)
        g = torch.Generator().manual_seed(4)
        for _ in range(2):
            oa.zero_grad()
            F.cross_entropy(a(torch.randn(4, 3, 32, 32, generator=g)),
                            torch.randint(0, 10, (4,), generator=g)).backward()
            oa.step()
            ob.zero_grad()
            F.cross_entropy(b(torch.randint(0, 100, (4, 8), generator=g)),
                            torch.randint(0, 10, (4,), generator=g)).backward()
            ob.step()
        src = os.path.join(work, "multi_torch.tar")
        torch.save({"modelA_state_dict": a.state_dict(), "modelB_state_dict": b.state_dict(),
                    "optimizerA_state_dict": oa.state_dict(),
                    "optimizerB_state_dict": ob.state_dict()}, src)
        back = os.path.join(work, "multi_back.tar")
        run([prog, "--load", src, "--save", back])
        ck = torch.load(back)
        compare_ckpt(ck["modelA_state_dict"], ck["optimizerA_state_dict"], a, oa, errors, "A")
        compare_ckpt(ck["modelB_state_dict"], ck["optimizerB_state_dict"], b, ob, errors, "B")
    return errors


def case_print(prog):
    import contextlib
    import io
    model = Net()
    optimizer = optim.SGD(model.parameters(), lr=0.001, momentum=0.9)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        print("Model's state_dict:")
        for k in model.state_dict():
            print(k, "\t", model.state_dict()[k].size())
        print("Optimizer's state_dict:")
        for k in optimizer.state_dict():
            print(k, "\t", optimizer.state_dict()[k])
    got = run([prog, "--torch", GEN])
    if got != buf.getvalue():
        return [f"output differs:\n--- C\n{got}--- torch\n{buf.getvalue()}"]
    return []


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    case, prog, work = sys.argv[1:]
    work = os.path.join(work, case)   # ctest runs cases in parallel: no shared files
    os.makedirs(work, exist_ok=True)
    torch.set_num_threads(1)
    if case.startswith("steps_"):
        _, arch, optname = case.split("_", 2)
        errors = case_steps(prog, work, arch, optname)
    elif case.startswith("eps8_"):
        _, arch, optname = case.split("_", 2)
        errors = case_eps8(prog, work, arch, optname)
    elif case.startswith("xresume_"):
        _, direction, optname = case.split("_", 2)
        errors = case_xresume(prog, work, direction, optname)
    elif case == "print_state_dict":
        errors = case_print(prog)
    elif case.startswith("multi_"):
        errors = case_multi(prog, work, case.split("_", 1)[1])
    else:
        sys.exit(f"unknown case {case}")
    if errors:
        print(f"FAIL {case}:")
        for e in errors[:40]:
            print("  " + e)
        sys.exit(1)
    print(f"PASS {case}")


if __name__ == "__main__":
    main()
