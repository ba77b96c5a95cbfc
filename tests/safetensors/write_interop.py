#!/usr/bin/python3
"""Files `statedict convert` writes as safetensors, against the real safetensors package.

usage: write_interop.py MODE STATEDICT WORKDIR      MODE: bytes | load | roundtrip | cli

bytes      torch.save writes tensors of every dtype this torch and safetensors share (0-dim,
           empty, 1- to 4-D, a transposed view, a slice of a larger storage, random bits);
           `statedict convert x.pt x.safetensors` must equal, byte for byte, what
           safetensors.torch.save_file writes for the same tensors (contiguous) and the
           metadata {"format": "pt"}. With several metadata keys (safetensors keeps them in a
           Rust HashMap whose order changes between runs) the header must parse to the same
           JSON and the data section must be identical. Tied weights: the name kept is the one
           safetensors' _remove_duplicate_names keeps, and the file equals save_file's of the
           state_dict without the dropped names. Under safetensors 0.4.5 (torch 2.6) the
           dtypes 0.4.5 cannot write are left out and the rest must be identical too (0.4.5's
           prepare() sorts and serializes the same way); the comparison is printed.
load       those files load with safetensors.torch.load_file and safe_open (keys, dtypes,
           shapes, bit-identical values, metadata, get_slice).
roundtrip  .pt -> .safetensors -> .pt with statedict both ways: torch.load of the result holds
           the same values and dtypes, keys in the safetensors header's order. Exits 77 when
           this statedict cannot read safetensors yet.
cli        every convert option: tied weights (reported, --keep-name), overlaps (refused,
           --copy-overlaps), non-tensor leaves (refused listing them, --drop-non-tensors,
           --non-tensors-as-metadata with Python reprs), --key, --strip-prefix, --add-prefix,
           --include, --exclude, --dtype, --format, --max-shard-size parsing, and a .pt whose
           tensor record has a flipped byte: refused (CRC) by default, converted with
           --no-verify.
Exits 77 when torch or safetensors is unavailable.
"""
import json
import os
import shutil
import struct
import subprocess
import sys

try:
    import torch
    import safetensors
    import safetensors.torch as st
    from safetensors import safe_open
except Exception as e:  # noqa: BLE001
    print(f"SKIP: cannot import torch and safetensors with {sys.executable}: {e}")
    sys.exit(77)

MODE, SD, WORK = sys.argv[1], sys.argv[2], sys.argv[3]
shutil.rmtree(WORK, ignore_errors=True)
os.makedirs(WORK)
ST_VERSION = tuple(int(x) for x in safetensors.__version__.split(".")[:2])
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what)
    return cond


def path(name):
    return os.path.join(WORK, name)


def run(*args):
    r = subprocess.run([SD, *args], capture_output=True, text=True)
    return r.returncode, r.stderr


def header(p):
    with open(p, "rb") as f:
        b = f.read()
    n = struct.unpack("<Q", b[:8])[0]
    return json.loads(b[8:8 + n]), b[8 + n:]


def raw(t):
    """The tensor's bytes (any dtype), for bit-exact comparison (NaNs included)."""
    return t.contiguous().reshape(-1).view(torch.uint8)


def same(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(raw(a), raw(b))


# ---- the tensors --------------------------------------------------------------------------------

DTYPES = ["float64", "float32", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8",
          "bool", "complex64", "uint16", "uint32", "uint64", "float8_e4m3fn", "float8_e5m2",
          "float8_e4m3fnuz", "float8_e5m2fnuz", "float8_e8m0fnu", "float4_e2m1fn_x2"]


def writable(dt):
    """True when this safetensors' save_file writes dtype dt."""
    try:
        st.save({"x": torch.zeros(16, dtype=torch.uint8).view(dt)})
        return True
    except Exception:  # noqa: BLE001
        return False


def dtypes():
    out = []
    for n in DTYPES:
        dt = getattr(torch, n, None)
        if dt is not None and writable(dt):
            out.append(dt)
    return out


def random_of(dt, shape, g):
    size = torch.empty(0, dtype=dt).element_size()
    numel = 1
    for s in shape:
        numel *= s
    bits = torch.randint(0, 256, (numel * size,), dtype=torch.uint8, generator=g)
    if dt == torch.bool:
        return (bits % 2).bool().reshape(shape)
    return bits.view(dt).reshape(shape)


def tensors():
    g = torch.Generator().manual_seed(12)
    d = {}
    for dt in dtypes():
        n = str(dt).split(".")[-1]
        d[f"{n}.matrix"] = random_of(dt, (3, 4), g)
        d[f"{n}.scalar"] = random_of(dt, (), g) if dt != getattr(torch, "float4_e2m1fn_x2", None) \
            else random_of(dt, (1,), g)
        d[f"{n}.empty"] = random_of(dt, (0, 3), g)
        d[f"{n}.4d"] = random_of(dt, (2, 1, 3, 2), g)
    base = torch.randn(6, 5, generator=g)
    d["view.transposed"] = base.t()                    # a lone non-contiguous view
    d["view.slice"] = torch.randn(40, generator=g)[8:20].view(3, 4)  # part of a larger storage
    d["a"] = torch.ones(1)                            # names that sort around the others
    d["Z"] = torch.zeros(2)
    d["\u00e9t\u00e9 \"q\"\\n"] = torch.arange(3)     # escaping and non-ASCII in names
    return d


def contiguous_copy(d):
    return {k: v.contiguous().clone() for k, v in d.items()}


# ---- bytes --------------------------------------------------------------------------------------


def mode_bytes():
    d = tensors()
    torch.save(d, path("all.pt"))
    rc, err = run("convert", path("all.pt"), path("all.safetensors"))
    if not check(rc == 0, f"convert all.pt: exit {rc}: {err}"):
        return
    st.save_file(contiguous_copy(d), path("ref.safetensors"), metadata={"format": "pt"})
    a = open(path("ref.safetensors"), "rb").read()
    b = open(path("all.safetensors"), "rb").read()
    print(f"safetensors {safetensors.__version__}: {len(d)} tensors, {len(a)} bytes from save_file, "
          f"{len(b)} from statedict: {'identical' if a == b else 'DIFFERENT'}")
    if a != b:
        i = next((i for i in range(min(len(a), len(b))) if a[i] != b[i]), min(len(a), len(b)))
        print("first difference at byte", i, "\n save_file:", a[max(0, i - 60):i + 60],
              "\n statedict:", b[max(0, i - 60):i + 60])
    check(a == b, "convert output differs from save_file's")

    # several metadata keys: same JSON, same data (safetensors' own order varies per process)
    sd = {"w": torch.randn(4, 4), "b": torch.arange(3)}
    md = {"format": "pt", "b": "x", "a": "\u2028\n\"", "zz": ""}
    tree = {"w": sd["w"], "b": sd["b"]}
    torch.save(tree, path("md.pt"))
    st.save_file(sd, path("md_ref.safetensors"), metadata=md)
    # from a torch file statedict writes {"format": "pt"} only; the rest must match
    rc, err = run("convert", path("md.pt"), path("md.safetensors"))
    check(rc == 0, f"convert md.pt: {err}")
    h1, d1 = header(path("md_ref.safetensors"))
    h2, d2 = header(path("md.safetensors"))
    check(d1 == d2, "data sections differ")
    h1.pop("__metadata__")
    check(h2.pop("__metadata__") == {"format": "pt"}, "metadata of a torch input is format=pt")
    check(h1 == h2, f"headers differ: {h1} vs {h2}")
    rc, err = run("ls", path("md_ref.safetensors"))
    if rc == 0:  # the reader is there: metadata passes through convert unchanged
        rc, err = run("convert", path("md_ref.safetensors"), path("md_copy.safetensors"))
        check(rc == 0, f"convert md_ref.safetensors: {err}")
        h3, d3 = header(path("md_copy.safetensors"))
        h1, _ = header(path("md_ref.safetensors"))
        check(h3 == h1 and d3 == d1, "safetensors -> safetensors changed header or data")

    # tied weights: the kept name is _remove_duplicate_names's; bytes equal save_file's of the rest
    g = torch.Generator().manual_seed(3)
    emb = torch.randn(10, 4, generator=g)
    sd = {"transformer.wte.weight": emb, "lm_head.weight": emb, "ln.bias": torch.randn(4, generator=g)}
    torch.save(sd, path("tied.pt"))
    rc, err = run("convert", path("tied.pt"), path("tied.safetensors"))
    check(rc == 0, f"convert tied.pt: {err}")
    removed = st._remove_duplicate_names(sd)
    for kept, gone in removed.items():
        for name in gone:
            check(f"{name} not written: the same tensor as {kept}" in err,
                  f"stderr names {name} -> {kept}: {err!r}")
    rest = {k: v.clone() for k, v in sd.items() if not any(k in g_ for g_ in removed.values())}
    st.save_file(rest, path("tied_ref.safetensors"), metadata={"format": "pt"})
    check(open(path("tied_ref.safetensors"), "rb").read() == open(path("tied.safetensors"), "rb").read(),
          "tied weights: file differs from save_file of the kept names")


# ---- load ---------------------------------------------------------------------------------------


def mode_load():
    d = tensors()
    torch.save(d, path("load.pt"))
    rc, err = run("convert", path("load.pt"), path("load.safetensors"))
    if not check(rc == 0, f"convert: {err}"):
        return
    got = st.load_file(path("load.safetensors"))
    check(set(got) == set(d), f"load_file keys: {sorted(set(got) ^ set(d))}")
    for k, v in d.items():
        if k in got:
            check(same(got[k], v), f"load_file {k}: {got[k].dtype} {tuple(got[k].shape)}")
    with safe_open(path("load.safetensors"), framework="pt") as f:
        check(f.metadata() == {"format": "pt"}, f"safe_open metadata {f.metadata()}")
        check(set(f.keys()) == set(d), "safe_open keys")
        for k in f.keys():
            check(same(f.get_tensor(k), d[k]), f"safe_open {k}")
        s = f.get_slice("float32.matrix")
        check(torch.equal(s[1:3], d["float32.matrix"][1:3]), "get_slice float32.matrix[1:3]")
    # bytes too: safetensors.torch.load of the file's contents, for the dtypes its Python side
    # maps (0.8's _TYPES lacks F8_E8M0 and F4, which only safe_open reads)
    names = {str(t).split(".")[-1] for t in st._TYPES.values()}
    sub = {k: v for k, v in d.items() if str(v.dtype).split(".")[-1] in names}
    torch.save(sub, path("load_sub.pt"))
    rc, err = run("convert", path("load_sub.pt"), path("load_sub.safetensors"))
    got = st.load(open(path("load_sub.safetensors"), "rb").read())
    check(rc == 0 and set(got) == set(sub) and all(same(got[k], v) for k, v in sub.items()),
          f"safetensors.torch.load of the bytes: {err}")


# ---- roundtrip ----------------------------------------------------------------------------------


def mode_roundtrip():
    d = tensors()
    torch.save(d, path("rt.pt"))
    rc, err = run("convert", path("rt.pt"), path("rt.safetensors"))
    if not check(rc == 0, f"convert to safetensors: {err}"):
        return
    rc, err = run("convert", path("rt.safetensors"), path("rt2.pt"))
    if rc != 0 and ("not a checkpoint" in err or "not yet built" in err or "unsupported" in err):
        print(f"SKIP: this statedict does not read safetensors yet: {err.strip()}")
        sys.exit(77)
    if not check(rc == 0, f"convert back to .pt: {err}"):
        return
    back = torch.load(path("rt2.pt"))
    h, _ = header(path("rt.safetensors"))
    order = [k for k in h if k != "__metadata__"]
    check(list(back) == order, f"key order {list(back)[:5]}... is not the header's {order[:5]}...")
    for k, v in d.items():
        check(k in back and same(back[k], v), f"round trip {k}")
    # and once more to safetensors: byte-identical to the first
    rc, err = run("convert", path("rt2.pt"), path("rt3.safetensors"))
    check(rc == 0 and open(path("rt3.safetensors"), "rb").read() == open(path("rt.safetensors"), "rb").read(),
          f"second trip to safetensors differs: {err}")


# ---- cli ----------------------------------------------------------------------------------------


def mode_cli():
    g = torch.Generator().manual_seed(5)

    # tied weights and --keep-name
    emb = torch.randn(8, 3, generator=g)
    sd = {"wte.weight": emb, "lm_head.weight": emb, "h.0.w": torch.randn(3, 3, generator=g)}
    torch.save(sd, path("tied.pt"))
    rc, err = run("convert", path("tied.pt"), path("tied.safetensors"))
    check(rc == 0 and "lm_head.weight not written: the same tensor as wte.weight" not in err
          and "wte.weight not written: the same tensor as lm_head.weight" in err,
          f"tied: save_model keeps the least name, lm_head.weight: {err!r}")
    got = st.load_file(path("tied.safetensors"))
    check(sorted(got) == ["h.0.w", "lm_head.weight"] and torch.equal(got["lm_head.weight"], emb),
          f"tied: keys {sorted(got)}")
    rc, err = run("convert", "--keep-name", "wte.weight", path("tied.pt"), path("tied2.safetensors"))
    got = st.load_file(path("tied2.safetensors"))
    check(rc == 0 and sorted(got) == ["h.0.w", "wte.weight"] and
          "lm_head.weight not written: the same tensor as wte.weight" in err,
          f"--keep-name: {sorted(got)} {err!r}")

    # partial overlaps refused naming both; --copy-overlaps writes both whole
    base = torch.arange(20.0)
    ov = {"whole": base, "part": base[5:9]}
    torch.save(ov, path("overlap.pt"))
    rc, err = run("convert", path("overlap.pt"), path("overlap.safetensors"))
    check(rc == 3 and "'whole' and 'part' overlap" in err and not os.path.exists(path("overlap.safetensors")),
          f"overlap refused naming both: {rc} {err!r}")
    rc, err = run("convert", "--copy-overlaps", path("overlap.pt"), path("overlap.safetensors"))
    got = st.load_file(path("overlap.safetensors"))
    check(rc == 0 and torch.equal(got["whole"], base) and torch.equal(got["part"], base[5:9]),
          f"--copy-overlaps: {err!r}")

    # a general checkpoint: non-tensor leaves
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    ckpt = {"epoch": 7, "model_state_dict": model.state_dict(),
            "optimizer_state_dict": opt.state_dict(), "loss": 0.25, "tag": "run'1"}
    torch.save(ckpt, path("ckpt.pt"))
    rc, err = run("convert", path("ckpt.pt"), path("ckpt.safetensors"))
    check(rc == 3 and "13 values are not tensors" in err and "epoch (int)" in err and "and " in err
          and not os.path.exists(path("ckpt.safetensors")), f"non-tensors refused, listed: {err!r}")
    rc, err = run("convert", "--drop-non-tensors", path("ckpt.pt"), path("ckpt.safetensors"))
    got = st.load_file(path("ckpt.safetensors"))
    want = {f"model_state_dict.{k}": v for k, v in model.state_dict().items()}
    want.update({f"optimizer_state_dict.state.{i}.momentum_buffer": s["momentum_buffer"]
                 for i, s in opt.state_dict()["state"].items()})
    check(rc == 0 and set(got) == set(want) and all(torch.equal(got[k], v) for k, v in want.items()),
          f"--drop-non-tensors: {sorted(set(got) ^ set(want))} {err!r}")
    rc, err = run("convert", "--non-tensors-as-metadata", path("ckpt.pt"), path("ckpt_md.safetensors"))
    with safe_open(path("ckpt_md.safetensors"), "pt") as f:
        md = f.metadata()
    pg = opt.state_dict()["param_groups"][0]
    check(rc == 0 and md.get("format") == "pt" and md.get("epoch") == "7" and md.get("loss") == "0.25"
          and md.get("tag") == repr("run'1")
          and md.get("optimizer_state_dict.param_groups.0.lr") == repr(pg["lr"])
          and md.get("optimizer_state_dict.param_groups.0.params") == repr(pg["params"])
          and md.get("optimizer_state_dict.param_groups.0.nesterov") == repr(pg["nesterov"]),
          f"--non-tensors-as-metadata: {md} {err!r}")

    # --key, --strip-prefix, --add-prefix, --include, --exclude
    rc, err = run("convert", "--key", "model_state_dict", path("ckpt.pt"), path("model.safetensors"))
    got = st.load_file(path("model.safetensors"))
    check(rc == 0 and set(got) == set(model.state_dict()), f"--key: {sorted(got)} {err!r}")
    dp = {f"module.{k}": v for k, v in model.state_dict().items()}
    dp["other.x"] = torch.ones(1)
    torch.save(dp, path("dp.pt"))
    rc, err = run("convert", "--strip-prefix", "module.", "--add-prefix", "net.", "--exclude", "*.bias",
                  "--include", "module.*", path("dp.pt"), path("dp.safetensors"))
    got = st.load_file(path("dp.safetensors"))
    check(rc == 0 and sorted(got) == ["net.0.weight", "net.2.weight"], f"prefix/globs: {sorted(got)} {err!r}")
    rc, err = run("convert", "--strip-prefix", "module.", path("dp.pt"), path("dp.pt2"))
    back = torch.load(path("dp.pt2"))
    check(rc == 0 and list(back) == [k[len("module."):] if k.startswith("module.") else k for k in dp],
          f"--strip-prefix to .pt keeps order: {list(back)}")
    sd2 = {"a.x": torch.ones(1), "x": torch.zeros(1)}
    torch.save(sd2, path("clash.pt"))
    rc, err = run("convert", "--strip-prefix", "a.", path("clash.pt"), path("clash.safetensors"))
    check(rc == 3 and "two keys become 'x' (the second from 'x')" in err, f"renaming clash refused: {rc} {err!r}")

    # --dtype: floating tensors only, sharing kept
    mixed = {"f32": torch.randn(4, generator=g), "f64": torch.randn(3, dtype=torch.float64, generator=g),
             "i64": torch.arange(4), "b": torch.tensor([True, False])}
    mixed["tied"] = mixed["f32"]
    torch.save(mixed, path("mixed.pt"))
    rc, err = run("convert", "--dtype", "bfloat16", path("mixed.pt"), path("mixed_bf16.pt"))
    back = torch.load(path("mixed_bf16.pt"))
    check(rc == 0 and back["f32"].dtype == torch.bfloat16 and torch.equal(back["f32"], mixed["f32"].bfloat16())
          and torch.equal(back["f64"], mixed["f64"].bfloat16()) and torch.equal(back["i64"], mixed["i64"])
          and back["i64"].dtype == torch.int64 and back["b"].dtype == torch.bool
          and back["tied"].untyped_storage().data_ptr() == back["f32"].untyped_storage().data_ptr(),
          f"--dtype bfloat16 to .pt: {err!r}")
    rc, err = run("convert", "--dtype", "float16", path("mixed.pt"), path("mixed16.safetensors"))
    got = st.load_file(path("mixed16.safetensors"))
    check(rc == 0 and got["f32"].dtype == torch.float16 and torch.equal(got["f64"], mixed["f64"].half())
          and got["i64"].dtype == torch.int64 and "tied" not in got and "tied not written" in err,
          f"--dtype float16 to safetensors: {sorted(got)} {err!r}")

    # --format overrides the extension
    rc, err = run("convert", "--format", "safetensors", path("mixed.pt"), path("mixed.bin"))
    check(rc == 0 and open(path("mixed.bin"), "rb").read(8) != b"PK\x03\x04" and
          set(st.load_file(path("mixed.bin"))) == {"f32", "f64", "i64", "b"}, f"--format safetensors: {err!r}")
    rc, err = run("convert", "--format", "pt", path("mixed.pt"), path("mixed_pt.safetensors"))
    check(rc == 0 and open(path("mixed_pt.safetensors"), "rb").read(4) == b"PK\x03\x04"
          and torch.equal(torch.load(open(path("mixed_pt.safetensors"), "rb"))["f32"], mixed["f32"]),
          f"--format pt: {err!r}")
    for bad in (["--format", "npz"], ["--dtype", "int8"], ["--max-shard-size", "5XB"], ["--max-shard-size", "0MB"]):
        rc, err = run("convert", *bad, path("mixed.pt"), path("never.safetensors"))
        check(rc == 2 and not os.path.exists(path("never.safetensors")), f"usage error {bad}: {rc}")

    # CRC: a flipped byte in a tensor record is refused by default, converted with --no-verify
    marker = torch.arange(64, dtype=torch.int32) * 1000003
    torch.save({"m": marker}, path("crc.pt"))
    b = bytearray(open(path("crc.pt"), "rb").read())
    i = bytes(b).find(marker.numpy().tobytes())
    check(i > 0, "found the tensor's bytes in crc.pt")
    b[i + 5] ^= 0x40
    open(path("crc_bad.pt"), "wb").write(bytes(b))
    rc, err = run("convert", path("crc_bad.pt"), path("crc_bad.safetensors"))
    check(rc == 3 and "CRC" in err and "--no-verify" in err and not os.path.exists(path("crc_bad.safetensors")),
          f"corrupt record refused: {rc} {err!r}")
    rc, err = run("convert", path("crc_bad.pt"), path("crc_bad2.pt"))
    check(rc == 3 and not os.path.exists(path("crc_bad2.pt")), f"corrupt record refused for .pt output: {rc}")
    rc, err = run("convert", "--no-verify", path("crc_bad.pt"), path("crc_bad.safetensors"))
    got = st.load_file(path("crc_bad.safetensors"))
    check(rc == 0 and not torch.equal(got["m"], marker) and (got["m"] != marker).sum() == 1,
          f"--no-verify converts the file as it is: {err!r}")


{"bytes": mode_bytes, "load": mode_load, "roundtrip": mode_roundtrip, "cli": mode_cli}[MODE]()
if failures:
    print(f"{len(failures)} failure(s)")
    sys.exit(1)
print("OK")
