#!/usr/bin/python3
"""torch.load on trees built in C and saved with sdict_save (tests/save/sdict_resave.c).

usage: check_built.py SDICT_RESAVE WORKDIR

- "build_wo" output contains no float, bytes, set or dtype value, so it is loaded with torch
  1.13's own weights_only=True unpickler.
- "build" output adds floats, bytes, a set, big ints and a dtype value, which 1.13's
  weights_only refuses (no BINFLOAT opcode, no _codecs/set globals), so it is loaded with
  torch.load(pickle_module=<restricted unpickler>) whose find_class admits only the globals a
  checkpoint needs (listed in ALLOWED).
Every expected value is recomputed here from the pattern the driver uses, not copied from it.
Exits 77 when torch is unavailable.
"""
import collections
import pickle
import subprocess
import sys
import types

try:
    import torch
except Exception as e:  # noqa: BLE001
    print(f"SKIP: cannot import torch with {sys.executable}: {e}")
    sys.exit(77)

ALLOWED = {
    ("collections", "OrderedDict"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_parameter"),
    ("_codecs", "encode"),
    ("__builtin__", "set"),
    ("builtins", "set"),
    ("__builtin__", "bytes"),
    ("builtins", "bytes"),
    ("torch", "bfloat16"),
    ("torch", "float16"),
    ("torch._utils", "_rebuild_meta_tensor_no_storage"),
}


class RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in ALLOWED or (module == "torch" and name.endswith("Storage")):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")


restricted = types.SimpleNamespace(Unpickler=RestrictedUnpickler, load=pickle.load,
                                   __name__="restricted_pickle")

failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what)


def pattern(n, dtype):
    vals = [((i * 7 + 3) % 11) - 5 for i in range(n)]
    if dtype == torch.uint8:
        return torch.tensor([v + 5 for v in vals], dtype=dtype)
    if dtype == torch.bool:
        return torch.tensor([bool(i & 1) for i in range(n)], dtype=dtype)
    if dtype.is_complex:
        return torch.tensor([complex(v, -v) for v in vals], dtype=dtype)
    return torch.tensor(vals, dtype=dtype)


def check_tensor(t, name, dtype, shape, stride, offset, values):
    check(isinstance(t, torch.Tensor), f"{name}: not a tensor ({type(t)})")
    check(t.dtype == dtype, f"{name}: dtype {t.dtype} != {dtype}")
    check(tuple(t.shape) == tuple(shape), f"{name}: shape {tuple(t.shape)} != {shape}")
    check(t.stride() == tuple(stride), f"{name}: stride {t.stride()} != {stride}")
    check(t.storage_offset() == offset, f"{name}: storage_offset {t.storage_offset()} != {offset}")
    check(torch.equal(t, values), f"{name}: values {t} != {values}")


def check_common(d, label):
    ts = d["tensors"]
    check(type(ts) is collections.OrderedDict, f"{label}: tensors is {type(ts)}")
    check(getattr(ts, "_metadata", None) == collections.OrderedDict([("", {"version": 2})]),
          f"{label}: _metadata {getattr(ts, '_metadata', None)}")
    for dt in (torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.complex128,
               torch.complex64, torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8,
               torch.bool):
        name = str(dt).split(".")[1]
        check_tensor(ts[name], f"{label}:{name}", dt, (2, 3), (3, 1), 0, pattern(6, dt).view(2, 3))
    check_tensor(ts["scalar"], f"{label}:scalar", torch.int64, (), (), 0, torch.tensor(-2))
    check_tensor(ts["empty"], f"{label}:empty", torch.float32, (0, 4), (4, 1), 0,
                 torch.empty(0, 4))
    check_tensor(ts["four_d"], f"{label}:four_d", torch.float32, (2, 1, 3, 2), (6, 6, 2, 1), 0,
                 pattern(12, torch.float32).view(2, 1, 3, 2))
    base = pattern(24, torch.float32)
    check_tensor(ts["view_base"], f"{label}:view_base", torch.float32, (24,), (1,), 0, base)
    check_tensor(ts["view_slice"], f"{label}:view_slice", torch.float32, (2, 3), (3, 1), 2,
                 base[2:8].view(2, 3))
    check_tensor(ts["view_t"], f"{label}:view_t", torch.float32, (6, 4), (1, 6), 0,
                 base.view(4, 6).t())
    check_tensor(ts["view_expand"], f"{label}:view_expand", torch.float32, (3, 5), (0, 1), 7,
                 base[7:12].expand(3, 5))
    ptr = ts["view_base"].storage().data_ptr()
    for k in ("view_slice", "view_t", "view_expand"):
        check(ts[k].storage().data_ptr() == ptr, f"{label}:{k} does not share view_base's storage")
    emb = pattern(30, torch.float32).view(10, 3)
    for k, rg in (("tied_a", True), ("tied_b", False)):
        check(type(ts[k]) is torch.nn.Parameter, f"{label}:{k} is {type(ts[k])}")
        check(ts[k].requires_grad == rg, f"{label}:{k} requires_grad {ts[k].requires_grad}")
        check_tensor(ts[k].detach(), f"{label}:{k}", torch.float32, (10, 3), (3, 1), 0, emb)
    check(ts["tied_a"].data_ptr() == ts["tied_b"].data_ptr(), f"{label}: tied weights not shared")
    check(ts["same_object"] is ts["tied_a"], f"{label}: same value saved twice is not one object")
    other = {ts[k].storage().data_ptr() for k in ts if k not in
             ("view_base", "view_slice", "view_t", "view_expand", "tied_a", "tied_b",
              "same_object", "empty")}
    check(ptr not in other, f"{label}: unrelated tensors share a storage")

    check(d["epoch"] == 7 and type(d["epoch"]) is int, f"{label}: epoch {d['epoch']!r}")
    ints = [0, 1, 255, 256, 65535, 65536, -1, -129, 2**31 - 1, -2**31, 2**31, -2**31 - 1,
            2**63 - 1, -2**63]
    check(d["ints"] == ints, f"{label}: ints {d['ints']}")
    check(d["none"] is None and d["yes"] is True and d["no"] is False, f"{label}: None/True/False")
    check(d["text"] == "h\u00e9llo\x00x", f"{label}: text {d['text']!r}")
    check(d["tuple5"] == (0, 1, 2, 3, 4), f"{label}: tuple5 {d['tuple5']!r}")
    check(d["nested"] == [("a", ()), ("a", ())] and d["nested"][0] is d["nested"][1],
          f"{label}: nested {d['nested']!r}")
    opt = d["optimizer"]
    check(list(opt["state"].keys()) == [0, 1, 2], f"{label}: optimizer state keys")
    for p in range(3):
        check(opt["state"][p]["step"] == 10 + p, f"{label}: step of {p}")
        check_tensor(opt["state"][p]["momentum_buffer"], f"{label}:momentum_buffer{p}",
                     torch.float32, (3,), (1,), 0, pattern(3, torch.float32))
    group = opt["param_groups"][0]
    check(group["params"] == [0, 1, 2] and group["nesterov"] is False and group["foreach"] is None,
          f"{label}: param_groups {group}")


def run(driver, mode, path):
    r = subprocess.run([driver, mode, path], capture_output=True, text=True)
    if r.returncode != 0:
        print(r.stderr)
        failures.append(f"driver {mode} failed")
        return False
    return True


def main():
    if len(sys.argv) != 3:
        print(__doc__)
        return 2
    driver, work = sys.argv[1], sys.argv[2]
    import os
    os.makedirs(work, exist_ok=True)

    p = os.path.join(work, "built_wo.pt")
    if run(driver, "build_wo", p):
        d = torch.load(p, weights_only=True)
        check_common(d, "weights_only")
        check("floats" not in d and "bytes" not in d, "weights_only file has extra keys")

    p = os.path.join(work, "built.pt")
    if run(driver, "build", p):
        d = torch.load(p, pickle_module=restricted)
        check_common(d, "restricted")
        f = d["floats"]
        check(f[:6] == [0.0, -0.0, 1.5, -2.25e-300, 1e300, 0.1] and f[6] == float("inf"),
              f"floats {f}")
        check(str(f[1]) == "-0.0", "negative zero lost")
        check(d["optimizer"]["param_groups"][0]["lr"] == 0.01, "lr")
        check(d["bytes"] == b"a\x00\xff\x80z" and d["empty_bytes"] == b"", "bytes")
        check(d["set"] == {3, "x"}, f"set {d['set']}")
        check(d["big_pos"] == 2**100 and d["big_neg"] == -2**70 and d["big_huge"] == 2**2100,
              "big ints")
        check(d["dtype"] is torch.bfloat16, f"dtype {d['dtype']}")
        m = d["meta"]
        check(m.is_meta and m.dtype == torch.float16 and tuple(m.shape) == (2, 3)
              and m.stride() == (1, 2), f"meta tensor {m}")
        # The restricted unpickler must really be in use: an unknown global fails.
        try:
            RestrictedUnpickler.find_class(None, "os", "system")
            check(False, "restricted unpickler accepted os.system")
        except pickle.UnpicklingError:
            pass

    print("failures:", len(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
