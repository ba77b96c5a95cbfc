#!/usr/bin/python3
"""The default torch.load of the torch running this script on trees built in C and saved with
sdict_save in both layouts (tests/save/sdict_resave.c).

usage: check_built2.py SDICT_RESAVE WORKDIR

torch >= 2.6 (default weights_only=True):
- "build2" (every dtype torch 2.x has but float8_e8m0fnu, views, tied weights, _metadata,
  optimizer-style state, floats, bytes and b'', sets, ints up to 255 bytes, dtype values,
  meta tensors, torch.Size, bytearray) loads with torch.load(path) in both layouts, with the
  same values, dtypes, strides, storage sharing and Python types;
- "build" adds an int of 264 bytes, so the driver has to allow values torch's weights-only
  unpickler refuses: torch.load(path) must then fail and weights_only=False must work.
torch 1.13: "build_wo" and "build" in the 2.x layout load as tests/save/check_built.py loads
the 1.13 layout (weights_only=True, and a restricted unpickler for floats and bytes).
Exits 77 when torch is unavailable.
"""
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "save"))
import check_built as cb  # noqa: E402  (exits 77 itself when torch is missing)

torch = cb.torch
check = cb.check


def build(driver, mode, path, torch2):
    cmd = [driver] + (["--torch2"] if torch2 else []) + [mode, path]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        print(r.stderr)
        cb.failures.append(f"driver {' '.join(cmd[1:])} failed")
        return False
    return True


def check_extras(d, label):
    f = d["floats"]
    check(f[:6] == [0.0, -0.0, 1.5, -2.25e-300, 1e300, 0.1] and f[6] == float("inf"),
          f"{label}: floats {f}")
    check(d["optimizer"]["param_groups"][0]["lr"] == 0.01, f"{label}: lr")
    check(type(d["bytes"]) is bytes and d["bytes"] == b"a\x00\xff\x80z", f"{label}: bytes")
    check(type(d["empty_bytes"]) is bytes and d["empty_bytes"] == b"", f"{label}: b''")
    check(type(d["set"]) is set and d["set"] == {3, "x"}, f"{label}: set {d['set']}")
    check(d["big_pos"] == 2**100 and d["big_neg"] == -2**70 and d["big_255"] == 2**2038,
          f"{label}: big ints")
    check(d["dtype"] is torch.bfloat16, f"{label}: dtype {d['dtype']}")
    m = d["meta"]
    check(m.is_meta and m.dtype == torch.float16 and tuple(m.shape) == (2, 3)
          and m.stride() == (1, 2), f"{label}: meta tensor {m}")
    v3 = [torch.uint16, torch.uint32, torch.uint64, torch.float8_e4m3fn, torch.float8_e5m2,
          torch.float8_e4m3fnuz, torch.float8_e5m2fnuz]
    check(d["v3_dtypes"] == v3, f"{label}: v3 dtype values {d['v3_dtypes']}")
    vals = [((i * 7 + 3) % 11) - 5 for i in range(6)]
    for dt in v3:
        name = str(dt).split(".")[1]
        t = d["v3"][name]
        if dt.is_floating_point:
            want = torch.tensor(vals, dtype=torch.float32).to(dt).view(2, 3)
            same = torch.equal(t.view(torch.uint8), want.view(torch.uint8))
        else:
            want = torch.tensor([v + 5 for v in vals], dtype=torch.int64).to(dt).view(2, 3)
            same = torch.equal(t.to(torch.int64), want.to(torch.int64))
        check(type(t) is torch.Tensor and t.dtype == dt and tuple(t.shape) == (2, 3)
              and t.stride() == (3, 1) and same, f"{label}: {name} {t}")
    u, uv = d["v3"]["uint16"], d["v3"]["uint16_view"]
    check(uv.untyped_storage().data_ptr() == u.untyped_storage().data_ptr()
          and uv.storage_offset() == 2 and tuple(uv.shape) == (4,)
          and torch.equal(uv.to(torch.int64), u.reshape(-1)[2:6].to(torch.int64)),
          f"{label}: uint16 view {uv}")
    check(type(d["size"]) is torch.Size and d["size"] == torch.Size([2, 3]), f"{label}: Size")
    check(type(d["size0"]) is torch.Size and d["size0"] == torch.Size([]), f"{label}: Size()")
    check(type(d["bytearray"]) is bytearray and d["bytearray"] == bytearray(b"x\x00\xff"),
          f"{label}: bytearray {d['bytearray']!r}")
    check(type(d["bytearray0"]) is bytearray and d["bytearray0"] == bytearray(),
          f"{label}: bytearray() {d['bytearray0']!r}")
    check(d["one_byte"] == b"\xe9" and d["one_char"] == "\xe9" and d["empty_str"] == "",
          f"{label}: short str/bytes")


def main():
    if len(sys.argv) != 3:
        print(__doc__)
        return 2
    driver, work = sys.argv[1], sys.argv[2]
    os.makedirs(work, exist_ok=True)
    major = int(torch.__version__.split(".")[0])
    print(f"torch {torch.__version__} under Python {sys.version.split()[0]}")
    for torch2 in (False, True):
        layout = "2.x" if torch2 else "1.13"
        if major >= 2:
            p = os.path.join(work, f"built2_{layout}.pt")
            if build(driver, "build2", p, torch2):
                d = torch.load(p)  # the defaults: weights_only=True
                cb.check_common(d, f"{layout} layout")
                check_extras(d, f"{layout} layout")
            p = os.path.join(work, f"built_{layout}.pt")
            if build(driver, "build", p, torch2):
                try:
                    torch.load(p)
                    check(False, f"{layout}: torch.load accepted an int of 264 bytes (LONG4)")
                except Exception as e:  # noqa: BLE001
                    why = [ln for ln in str(e).splitlines() if "Unsupported" in ln]
                    print(f"{layout}: torch.load refuses the int of 264 bytes, as expected: "
                          f"{(why or ['?'])[0][:100]}")
                d = torch.load(p, weights_only=False)
                check(d["big_huge"] == 2**2100, f"{layout}: big_huge")
        else:
            p = os.path.join(work, f"built_wo_{layout}.pt")
            if build(driver, "build_wo", p, torch2):
                cb.check_common(torch.load(p, weights_only=True), f"{layout} weights_only")
            p = os.path.join(work, f"built_{layout}.pt")
            if build(driver, "build", p, torch2):
                d = torch.load(p, pickle_module=cb.restricted)
                cb.check_common(d, f"{layout} restricted")
                check(d["big_huge"] == 2**2100 and d["empty_bytes"] == b"", f"{layout}: values")
    print("failures:", len(cb.failures))
    return 1 if cb.failures else 0


if __name__ == "__main__":
    sys.exit(main())
