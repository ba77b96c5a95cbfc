#!/usr/bin/python3
"""numpy values survive `statedict convert` as numpy, in the torch (and numpy) running this.

usage: numpy_kept.py STATEDICT WORKDIR

torch.save writes a checkpoint holding numpy scalars of every kind statedict reads (float16/32/
64, int8-64, uint8-64, bool_) and arrays (C and Fortran order, big-endian, 0-d, empty,
complex, bool, one byte), nested in lists and dicts beside a tensor. Then:
- `convert` without --not-weights-only refuses it (exit 3, naming the first numpy value, no
  output written): torch.load's default weights_only=True would refuse numpy's globals;
- `convert --not-weights-only`, in both layouts, writes files that
  torch.load(weights_only=False) returns with numpy's own types, dtypes, strides, memory order
  and values (bit for bit); in this torch's own layout (1.13's for torch 1.x, 2.x's for
  torch >= 2.7) the file must be byte-identical to torch's.
Exits 77 when torch or numpy is unavailable.
"""
import os
import subprocess
import sys

try:
    import numpy as np
    import torch
except Exception as e:  # noqa: BLE001
    print(f"SKIP: cannot import torch and numpy with {sys.executable}: {e}")
    sys.exit(77)

failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what)


def values():
    return {
        "f16": np.float16(0.333), "f32": np.float32(1.5), "f64": np.float64(-2.5e-300),
        "nan": np.float64("nan"), "i8": np.int8(-5), "i8b": np.int8(-5), "i16": np.int16(-300),
        "i32": np.int32(2**31 - 1), "i64": np.int64(-2**63), "u8": np.uint8(98),
        "u16": np.uint16(65535), "u32": np.uint32(2**32 - 1), "u64": np.uint64(2**64 - 1),
        "t": np.bool_(True), "t2": np.bool_(True), "f": np.bool_(False),
        "arr": np.arange(6, dtype=np.float32).reshape(2, 3),
        "fortran": np.asfortranarray(np.arange(12.0).reshape(3, 4)),
        "big_endian": np.arange(5, dtype=">i4"), "zero_d": np.array(3.5),
        "empty": np.zeros((0, 3), dtype=np.int16), "complex": np.array([1 + 2j, -3j], dtype=np.complex64),
        "bools": np.array([True, False, True]), "one_byte": np.array([98], dtype=np.uint8),
        "u64s": np.array([0, 2**64 - 1], dtype=np.uint64),
        "tensor": torch.arange(4, dtype=torch.float32),
        "nested": [np.int32(3), {"k": np.float64(0.1), "b": 1}, (np.uint8(7),)],
    }


def same(x, y, path):
    check(type(x) is type(y), f"{path}: type {type(y).__name__}, want {type(x).__name__}")
    if type(x) is not type(y):
        return
    if isinstance(x, np.ndarray):
        check(x.dtype == y.dtype and x.dtype.str == y.dtype.str, f"{path}: dtype {y.dtype.str} vs {x.dtype.str}")
        check(x.shape == y.shape and (x.strides == y.strides or x.size == 0),
              f"{path}: shape/strides {y.shape} {y.strides}")
        check(x.flags.c_contiguous == y.flags.c_contiguous and x.flags.f_contiguous == y.flags.f_contiguous,
              f"{path}: memory order")
        check(x.tobytes("A") == y.tobytes("A"), f"{path}: values {y!r} vs {x!r}")
    elif isinstance(x, np.generic):
        check(x.dtype == y.dtype and x.dtype.str == y.dtype.str, f"{path}: dtype {y.dtype.str} vs {x.dtype.str}")
        check(x.tobytes() == y.tobytes() or (x != x and y != y), f"{path}: value {y!r} vs {x!r}")
    elif isinstance(x, dict):
        check(list(x) == list(y), f"{path}: keys {list(y)}")
        for k in x:
            if k in y:
                same(x[k], y[k], f"{path}.{k}")
    elif isinstance(x, (list, tuple)):
        check(len(x) == len(y), f"{path}: length")
        for i, (a, b) in enumerate(zip(x, y)):
            same(a, b, f"{path}.{i}")
    elif isinstance(x, torch.Tensor):
        check(torch.equal(x, y) and x.dtype == y.dtype, f"{path}: tensor")
    else:
        check(x == y, f"{path}: {y!r} vs {x!r}")


def main():
    if len(sys.argv) != 3:
        print(__doc__)
        return 2
    cli, work = sys.argv[1], sys.argv[2]
    os.makedirs(work, exist_ok=True)
    print(f"torch {torch.__version__}, numpy {np.__version__}, Python {sys.version.split()[0]}")
    src = os.path.join(work, "numpy_values.pt")
    torch.save(values(), src)
    # what torch gives back for its own file is the reference (numpy's protocol-2 pickles
    # bring a big-endian array back in native order, for one)
    ref = torch.load(src, weights_only=False)

    out = os.path.join(work, "refused.pt")
    r = subprocess.run([cli, "convert", src, out], capture_output=True, text=True)
    check(r.returncode == 3 and "'f16' is a numpy.float16 scalar" in r.stderr
          and "--not-weights-only" in r.stderr and not os.path.exists(out),
          f"convert without --not-weights-only: exit {r.returncode}, {r.stderr!r}")
    # the layout this torch writes, when statedict writes it too (2.0 to 2.6 have their own)
    major, minor = (int(p) for p in torch.__version__.split(".")[:2])
    native = "1.13" if major == 1 else "2.x" if (major, minor) >= (2, 7) else None
    for layout in ("1.13", "2.x"):
        # the same file name, so the same archive folder as torch's file
        os.makedirs(os.path.join(work, layout), exist_ok=True)
        out = os.path.join(work, layout, "numpy_values.pt")
        r = subprocess.run([cli, "convert", "--layout", layout, "--not-weights-only", src, out],
                           capture_output=True, text=True)
        check(r.returncode == 0, f"convert --layout {layout}: exit {r.returncode} {r.stderr}")
        if r.returncode:
            continue
        same(ref, torch.load(out, weights_only=False), f"layout {layout}")
        with open(src, "rb") as a, open(out, "rb") as b:
            identical = a.read() == b.read()
        print(f"layout {layout}: {'byte-identical to' if identical else 'differs from'} torch's file")
        if layout == native:
            check(identical, f"layout {layout}: not byte-identical to torch's own file")
    print("failures:", len(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
