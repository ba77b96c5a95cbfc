#!/usr/bin/python3
"""Interop tests of the nn layer against real PyTorch, driven through examples/infer.

usage: nn_interop.py CASE INFER WORKDIR

torch builds the architecture with a fixed seed (BatchNorm statistics randomised so eval mode
really uses them), saves weights and input; `infer` runs the C model; its output and the
state_dict it saves (--save-state) are checked against torch:
  eval_<arch>    eval output within tolerance; C's state_dict has torch's keys, order,
                 _metadata, dtypes and values, loads with strict=True without warnings, and
                 gives torch's output again
  train_<arch>   train-mode forward (BatchNorm batch statistics; Dropout p=0): output and the
                 updated running_mean / running_var / num_batches_tracked
  lenet_example  examples/lenet (INFER is then the lenet binary) prints torch's outputs
  ckpt_lenet     weights inside a general checkpoint under 'model_state_dict' with a
                 DataParallel 'module.' prefix, loaded with --strip-prefix module., input as
                 {'input': x}
  err_missing / err_unexpected / err_shape / err_type
                 infer's stderr equals torch's RuntimeError text for the same state_dict
  err_prefix     a 'module.'-prefixed file without --strip-prefix: torch's text, then a hint
                 naming the option
  ns_lenet / ns_resnet18 / ns_prefix
                 --non-strict: infer prints what torch's load_state_dict(strict=False)
                 returns (_IncompatibleKeys repr, same keys in the same order) for missing
                 and unexpected keys, nested prefixes, _extra_state keys (torch 1.13 omits
                 keys such as fc.weight.sub that 2.x reports; statedict follows 2.x); with a
                 prefix, the hint too
  skip_shape     --skip-size-mismatch --non-strict against torch's recipe (filter mis-shaped
                 keys, load strict=False): the same keys skipped (named with both shapes),
                 the rest loaded, the skipped ones left at the model's values
  nbt_wrap       train mode with num_batches_tracked at 2**63-1: wraps to -2**63 as torch's
                 add_(1) does, running statistics as torch's (run under UBSan too)
Exit 77 (skip) when torch is not importable.
"""
import ast
import os
import re
import subprocess
import sys
import warnings
from collections import OrderedDict

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except Exception as e:  # noqa: BLE001
    print(f"SKIP: torch not importable: {e}")
    sys.exit(77)


sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "examples"))
from recipe_net import TheModelClass  # noqa: E402


class Net(TheModelClass):
    """The recipe's model under the name C's sdict_lenet_new gives it (error messages name it)."""


def mlp(p=0.5):
    return nn.Sequential(nn.Embedding(100, 16), nn.Flatten(), nn.Linear(16 * 8, 64),
                         nn.BatchNorm1d(64), nn.ReLU(), nn.Dropout(p), nn.Linear(64, 10))


def build(arch, dropout=0.5):
    torch.manual_seed(0)
    if arch == "lenet":
        model, x = Net(), torch.randn(4, 3, 32, 32)
    elif arch == "resnet18":
        import torchvision
        model, x = torchvision.models.resnet18(), torch.randn(2, 3, 64, 64)
    elif arch == "mlp":
        model, x = mlp(dropout), torch.randint(0, 100, (6, 8), dtype=torch.int64)
    else:
        raise SystemExit(f"unknown arch {arch}")
    # Non-trivial BatchNorm state so eval really uses running statistics and affine params.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
                m.num_batches_tracked.fill_(7)
    return model, x


FAILURES = []


def check(cond, what):
    if not cond:
        FAILURES.append(what)
        print("FAIL:", what)


def close(a, b, rtol, atol, what):
    ok = a.shape == b.shape and a.dtype == b.dtype and torch.allclose(a, b, rtol=rtol, atol=atol)
    diff = (a.double() - b.double()).abs().max().item() if a.shape == b.shape else float("nan")
    print(f"{what}: shape {tuple(a.shape)} max abs diff {diff:.3g}")
    check(ok, f"{what}: not within rtol={rtol} atol={atol} (max abs diff {diff}, "
              f"shapes {tuple(a.shape)} vs {tuple(b.shape)}, dtypes {a.dtype} vs {b.dtype})")


def run_infer(infer, args, expect_ok=True):
    r = subprocess.run([infer] + args, capture_output=True, text=True)
    if expect_ok and r.returncode != 0:
        print(r.stderr)
        raise SystemExit(f"infer failed with status {r.returncode}")
    return r


def tol(arch):
    # issue 6: 1e-5 relative; resnet18 1e-4 absolute (long float32 sums in a different order)
    return (1e-5, 1e-4) if arch == "resnet18" else (1e-5, 1e-6)


def check_c_state(arch, model, c_state_path, x, ref_out, rtol, atol, dropout=0.5):
    """C's state_dict: same keys/order/_metadata/dtypes/values as torch; strict load works."""
    sd = torch.load(c_state_path)
    ref = model.state_dict()
    check(list(sd.keys()) == list(ref.keys()), f"{arch}: C state_dict key order differs")
    check(getattr(sd, "_metadata", None) == ref._metadata,
          f"{arch}: _metadata differs: {getattr(sd, '_metadata', None)} vs {ref._metadata}")
    for k, v in ref.items():
        if k not in sd:
            continue
        check(sd[k].dtype == v.dtype and sd[k].shape == v.shape,
              f"{arch}: {k} dtype/shape {sd[k].dtype}{tuple(sd[k].shape)} vs {v.dtype}{tuple(v.shape)}")
        check(type(sd[k]) is torch.Tensor, f"{arch}: {k} is {type(sd[k])}, not a plain Tensor")
    fresh, _ = build(arch, dropout)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = fresh.load_state_dict(sd, strict=True)
    check(not res.missing_keys and not res.unexpected_keys, f"{arch}: strict load reported {res}")
    return fresh


def case_eval(arch, infer, wd):
    model, x = build(arch)
    model.eval()
    with torch.no_grad():
        ref = model(x)
    w, xi, yo, so = (os.path.join(wd, f"{arch}_{n}.pt") for n in ("w", "x", "y", "state"))
    torch.save(model.state_dict(), w)
    torch.save(x, xi)
    run_infer(infer, ["--arch", arch, "--weights", w, "--input", xi, "--output", yo,
                      "--mode", "eval", "--save-state", so])
    out = torch.load(yo)
    rtol, atol = tol(arch)
    close(out, ref, rtol, atol, f"{arch} eval output")
    fresh = check_c_state(arch, model, so, x, ref, rtol, atol)
    fresh.eval()
    with torch.no_grad():
        again = fresh(x)
    check(torch.equal(again, ref), f"{arch}: torch output differs after loading C's state_dict")


def case_train(arch, infer, wd):
    model, x = build(arch, dropout=0.0)
    w, xi, yo, so = (os.path.join(wd, f"{arch}_train_{n}.pt") for n in ("w", "x", "y", "state"))
    torch.save(model.state_dict(), w)
    torch.save(x, xi)
    model.train()
    with torch.no_grad():
        ref = model(x)
    run_infer(infer, ["--arch", arch, "--weights", w, "--input", xi, "--output", yo,
                      "--mode", "train", "--dropout", "0", "--save-state", so])
    out = torch.load(yo)
    rtol, atol = tol(arch)
    # batch statistics over few samples amplify float32 rounding a little
    close(out, ref, max(rtol, 1e-4), max(atol, 1e-4), f"{arch} train output")
    sd = torch.load(so)
    n_bn = 0
    for k, v in model.state_dict().items():
        if k.endswith(("running_mean", "running_var")):
            close(sd[k], v, 1e-5, 1e-6, f"{arch} {k}")
            n_bn += 1
        elif k.endswith("num_batches_tracked"):
            check(sd[k].dtype == torch.int64 and sd[k].dim() == 0 and int(sd[k]) == int(v) == 8,
                  f"{arch} {k}: {sd[k]!r} vs {v!r}")
    check(n_bn > 0, f"{arch}: no BatchNorm statistics compared")
    check_c_state(arch, model, so, x, ref, rtol, atol, dropout=0.0)


def case_ckpt(infer, wd):
    model, x = build("lenet")
    model.eval()
    with torch.no_grad():
        ref = model(x)
    dp = nn.DataParallel(model)  # keys get the 'module.' prefix, as saved from multi-GPU runs
    w, xi, yo = (os.path.join(wd, f"ckpt_{n}.pt") for n in ("w", "x", "y"))
    ck = {"epoch": 3, "model_state_dict": dp.state_dict(), "loss": torch.tensor(0.25)}
    check(next(iter(ck["model_state_dict"])).startswith("module."), "DataParallel prefix absent")
    torch.save(ck, w)
    torch.save({"input": x}, xi)
    run_infer(infer, ["--arch", "lenet", "--weights", w, "--input", xi, "--output", yo,
                      "--strip-prefix", "module."])
    close(torch.load(yo), ref, 1e-5, 1e-6, "lenet from checkpoint")


HINT = ('infer: the state_dict\'s keys start with "module." (saved from DataParallel or '
        'DistributedDataParallel); rerun with --strip-prefix module. to load them')


def case_err_prefix(infer, wd):
    """A DataParallel file without --strip-prefix: torch's error, then the hint; no renaming."""
    model, x = build("lenet")
    sd = nn.DataParallel(model).state_dict()
    expected = torch_message(Net(), sd)
    w, xi, yo = (os.path.join(wd, f"err_prefix_{n}.pt") for n in ("w", "x", "y"))
    torch.save(sd, w)
    torch.save(x, xi)
    r = run_infer(infer, ["--arch", "lenet", "--weights", w, "--input", xi, "--output", yo],
                  expect_ok=False)
    check(r.returncode == 1, f"err_prefix: infer exit status {r.returncode}, expected 1")
    print("infer :", repr(r.stderr))
    check(r.stderr == expected + "\n" + HINT + "\n", "err_prefix: stderr is not torch's text + hint")
    check(not os.path.exists(yo), "err_prefix: output written despite the failure")


def nonstrict_sd(kind, model):
    """The state_dicts of the ns_* cases: keys removed, added, reordered, nested."""
    sd = model.state_dict()
    if kind == "ns_lenet":
        del sd["fc2.bias"]
        del sd["conv1.weight"]
        sd["fc3.extra"] = torch.zeros(2)
        sd["head.weight"] = torch.zeros(2)
        return sd
    if kind == "ns_prefix":
        return nn.DataParallel(model).state_dict()
    # resnet18: extras spread through the order, at every depth, and keys torch does not
    # report (a child's parameter name followed by more components)
    items = list(sd.items())
    extra = [("zz", 1), ("layer1.0.extra", 2), ("layer1.9.conv1.weight", 3),
             ("layer2.0.downsample.0._extra_state", 4), ("_extra_state", 5),
             ("fc.weight.sub", 6), ("layer4.1.bn2.running_mean.x", 7), ("layer4.2.bn1.weight", 8),
             ("layer2.0.downsample.1.zz", 9), ("layer1", 10)]
    out = OrderedDict()
    for i, (k, v) in enumerate(items):
        if k in ("layer3.1.bn2.running_var", "layer1.0.conv1.weight", "fc.bias",
                 "layer2.0.downsample.1.num_batches_tracked"):
            continue
        out[k] = v
        if i % 12 == 5 and extra:
            ek, n = extra.pop(0)
            out[ek] = torch.full((2,), float(n))
    for ek, n in extra:
        out[ek] = torch.full((2,), float(n))
    out._metadata = sd._metadata
    return out


def case_nonstrict(kind, infer, wd):
    arch = "resnet18" if kind == "ns_resnet18" else "lenet"
    model, x = build(arch)
    sd = nonstrict_sd(kind, model)
    fresh, _ = build(arch)
    expected = repr(fresh.load_state_dict(sd, strict=False))
    w, xi, yo, so = (os.path.join(wd, f"{kind}_{n}.pt") for n in ("w", "x", "y", "s"))
    torch.save(sd, w)
    torch.save(x, xi)
    r = run_infer(infer, ["--arch", arch, "--weights", w, "--input", xi, "--output", yo,
                          "--non-strict", "--save-state", so])
    lines = r.stderr.splitlines()
    print("torch :", expected)
    print("infer :", r.stderr)
    if kind == "ns_resnet18" and int(torch.__version__.split(".")[0]) < 2:
        # torch 1.13 does not report a key whose first component below a module is a
        # parameter or buffer but has more components, nor a bare child name; 2.x does, and
        # statedict follows 2.x: the rest must be 1.13's list in 1.13's order
        m = re.match(r"^_IncompatibleKeys\(missing_keys=(\[.*\]), unexpected_keys=(\[.*\])\)$",
                     lines[0] if lines else "")
        check(m is not None, f"{kind}: no _IncompatibleKeys line")
        if m:
            got_missing, got_unexp = ast.literal_eval(m.group(1)), ast.literal_eval(m.group(2))
            later = {"fc.weight.sub", "layer4.1.bn2.running_mean.x", "layer1"}
            res = fresh.load_state_dict(sd, strict=False)
            check(got_missing == res.missing_keys, f"{kind}: missing keys differ")
            check([k for k in got_unexp if k not in later] == res.unexpected_keys,
                  f"{kind}: unexpected keys differ from 1.13's beyond the 2.x rule")
            check(later <= set(got_unexp) and not later & set(res.unexpected_keys),
                  f"{kind}: the 2.x-only keys are not where expected")
    else:
        check(len(lines) >= 1 and lines[0] == expected,
              f"{kind}: _IncompatibleKeys differ from torch's")
    check(expected.count("'") > 4, f"{kind}: torch reported too few keys for a real test")
    if kind == "ns_prefix":
        check(lines[1:] == [HINT], f"{kind}: no --strip-prefix hint")
    else:
        check(len(lines) == 1, f"{kind}: unexpected extra stderr lines")
    # what was present was loaded: C's state equals torch's fresh model after the same load
    c_sd = torch.load(so)
    ref = fresh.state_dict()
    for k in sd:
        if k in ref:
            check(torch.equal(c_sd[k], ref[k]), f"{kind}: {k} not loaded as torch loads it")


def case_skip_shape(infer, wd):
    model, x = build("lenet")
    sd = model.state_dict()
    sd["fc1.weight"] = torch.randn(120, 401)
    sd["conv2.bias"] = torch.randn(1, 16)
    del sd["fc3.bias"]
    sd["extra"] = torch.zeros(1)
    fresh, _ = build("lenet")
    msd = fresh.state_dict()
    # the recipe: drop what does not fit, then load non-strictly
    filtered = {k: v for k, v in sd.items() if k not in msd or v.shape == msd[k].shape}
    res = fresh.load_state_dict(filtered, strict=False)
    skipped = [k for k in msd if k in sd and sd[k].shape != msd[k].shape]
    check(skipped == ["conv2.bias", "fc1.weight"], f"skip_shape: skipped {skipped}")
    expected = repr(type(res)([k for k in res.missing_keys if k not in skipped],
                              res.unexpected_keys))
    w, xi, yo, so = (os.path.join(wd, f"skip_shape_{n}.pt") for n in ("w", "x", "y", "s"))
    torch.save(sd, w)
    torch.save(x, xi)
    r = run_infer(infer, ["--arch", "lenet", "--weights", w, "--input", xi, "--output", yo,
                          "--non-strict", "--skip-size-mismatch", "--save-state", so])
    want = [f"infer: skipped size mismatch for {k}: checkpoint {sd[k].shape}, model {msd[k].shape}"
            for k in skipped] + [expected]
    print("want  :", want)
    print("infer :", r.stderr.splitlines())
    check(r.stderr.splitlines() == want, "skip_shape: report differs")
    c_sd = torch.load(so)
    for k, v in msd.items():
        if k in skipped:
            check(c_sd[k].shape == v.shape and not torch.equal(c_sd[k].flatten()[:16],
                                                               sd[k].flatten()[:16]),
                  f"skip_shape: {k} was not left at the model's value")
        elif k in sd:
            check(torch.equal(c_sd[k], sd[k]), f"skip_shape: {k} not loaded")
    # without the flag: torch's error, status 1
    r = run_infer(infer, ["--arch", "lenet", "--weights", w, "--input", xi, "--output", yo + "2",
                          "--non-strict"], expect_ok=False)
    try:
        build("lenet")[0].load_state_dict(sd, strict=False)
        check(False, "torch accepted mis-shaped keys")
    except RuntimeError as e:
        check(r.returncode == 1 and r.stderr == str(e) + "\n", "skip_shape: error without the flag")


def case_nbt_wrap(infer, wd):
    model, x = build("mlp", dropout=0.0)
    with torch.no_grad():
        model[3].num_batches_tracked.fill_(2**63 - 1)
    w, xi, yo, so = (os.path.join(wd, f"nbt_wrap_{n}.pt") for n in ("w", "x", "y", "s"))
    torch.save(model.state_dict(), w)
    torch.save(x, xi)
    model.train()
    with torch.no_grad():
        ref = model(x)
    ref_n = int(model[3].num_batches_tracked)
    check(ref_n == -2**63, f"torch's count is {ref_n}, not -2**63")
    run_infer(infer, ["--arch", "mlp", "--weights", w, "--input", xi, "--output", yo,
                      "--mode", "train", "--dropout", "0", "--save-state", so])
    c_sd = torch.load(so)
    check(int(c_sd["3.num_batches_tracked"]) == ref_n,
          f"C's count is {int(c_sd['3.num_batches_tracked'])}, torch's {ref_n}")
    close(c_sd["3.running_mean"], model[3].running_mean, 1e-5, 1e-6, "nbt_wrap running_mean")
    close(torch.load(yo), ref, 1e-4, 1e-4, "nbt_wrap train output")


def torch_message(model, sd):
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        return str(e)
    raise SystemExit("torch accepted the broken state_dict")


def case_error(kind, infer, wd):
    arch = "resnet18" if kind == "err_bn" else "lenet"
    model, x = build(arch)
    sd = model.state_dict()
    if kind == "err_missing":
        del sd["fc2.bias"]
        del sd["conv1.weight"]
    elif kind == "err_unexpected":
        sd["fc3.extra"] = torch.zeros(2)
        sd["head.weight"] = torch.zeros(2)
    elif kind == "err_shape":
        sd["fc1.weight"] = torch.zeros(120, 401)
        sd["conv2.bias"] = torch.zeros(1, 16)
        del sd["fc3.bias"]
        sd["extra"] = torch.zeros(1)
    elif kind == "err_type":
        sd["fc3.bias"] = 5
    elif kind == "err_bn":
        # a version-2 file without num_batches_tracked: missing (torch synthesises it only for
        # older versions); a plain dict (no _metadata) would load leniently
        del sd["layer1.0.bn1.num_batches_tracked"]
    expected = torch_message(model, sd)
    w, xi, yo = (os.path.join(wd, f"{kind}_{n}.pt") for n in ("w", "x", "y"))
    torch.save(sd, w)
    torch.save(x, xi)
    r = run_infer(infer, ["--arch", arch, "--weights", w, "--input", xi, "--output", yo],
                  expect_ok=False)
    check(r.returncode == 1, f"{kind}: infer exit status {r.returncode}, expected 1")
    got = r.stderr[:-1] if r.stderr.endswith("\n") else r.stderr
    print("torch :", repr(expected))
    print("infer :", repr(got))
    check(got == expected, f"{kind}: message differs from torch's")
    check(not os.path.exists(yo), f"{kind}: output written despite the failure")


def case_bn_legacy(infer, wd):
    """Plain dict without _metadata and without num_batches_tracked loads (torch synthesises 0)."""
    model, x = build("mlp")
    model.eval()
    with torch.no_grad():
        ref = model(x)
    sd = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.nn.Sequential(*list(mlp())).load_state_dict(sd)  # torch accepts it too
    w, xi, yo, so = (os.path.join(wd, f"legacy_{n}.pt") for n in ("w", "x", "y", "s"))
    torch.save(sd, w)
    torch.save(x, xi)
    run_infer(infer, ["--arch", "mlp", "--weights", w, "--input", xi, "--output", yo,
                      "--save-state", so])
    close(torch.load(yo), ref, 1e-5, 1e-6, "mlp from legacy dict")
    check(int(torch.load(so)["3.num_batches_tracked"]) == 0, "num_batches_tracked not reset to 0")


def case_lenet_example(lenet, wd):
    """examples/lenet (the recipe written by hand in C) prints torch's outputs and classes."""
    model, x = build("lenet")
    model.eval()
    with torch.no_grad():
        ref = model(x)
    w, xi = (os.path.join(wd, f"example_{n}.pt") for n in ("w", "x"))
    torch.save(model.state_dict(), w)
    torch.save(x, xi)
    r = run_infer(lenet, [w, xi])
    rows = [ln for ln in r.stdout.splitlines() if ln.startswith("sample ")]
    check(len(rows) == ref.shape[0], f"lenet example printed {len(rows)} rows")
    for n, ln in enumerate(rows):
        vals = torch.tensor([float(t) for t in ln.split(":")[1].split("->")[0].split()])
        close(vals, ref[n], 0, 2e-6, f"lenet example sample {n}")  # printed with 6 decimals
        check(ln.endswith(f"class {int(ref[n].argmax())}"), f"lenet example class: {ln}")


def main():
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    case, infer, wd = sys.argv[1:]
    os.makedirs(wd, exist_ok=True)
    if case.startswith("eval_"):
        case_eval(case[5:], infer, wd)
    elif case.startswith("train_"):
        case_train(case[6:], infer, wd)
    elif case == "ckpt_lenet":
        case_ckpt(infer, wd)
    elif case == "lenet_example":
        case_lenet_example(infer, wd)
    elif case == "bn_legacy":
        case_bn_legacy(infer, wd)
    elif case == "err_prefix":
        case_err_prefix(infer, wd)
    elif case.startswith("ns_"):
        case_nonstrict(case, infer, wd)
    elif case == "skip_shape":
        case_skip_shape(infer, wd)
    elif case == "nbt_wrap":
        case_nbt_wrap(infer, wd)
    elif case.startswith("err_"):
        case_error(case, infer, wd)
    else:
        raise SystemExit(f"unknown case {case}")
    if FAILURES:
        print(f"{len(FAILURES)} failure(s)")
        sys.exit(1)
    print("ok")


if __name__ == "__main__":
    main()
