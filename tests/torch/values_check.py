#!/usr/bin/python3
"""Values torch writes that are more than tensors, against one torch generation.

usage: values_check.py STATEDICT WORKDIR

With the running torch, writes into WORKDIR and checks through the statedict CLI:
  storages   bare storages saved as values (t.storage(); untyped_storage() in torch 2.x; a
             storage shared with a tensor; the legacy format too): `ls` lists dtype,
             storage(numel), bytes and device; `dump --json` equals torch.load's tree
             (torch_dump.py / compare_dump.py: dtype, numel, bytes, sha256 of the content,
             sharing); `show` prints the elements; `diff` compares content (one changed
             element is found, the file against itself and against its convert is equal);
             `convert` writes a file torch loads back equal, as TypedStorages.
  keys       dict keys torch loads as values (torch.float32, tuples, ints, floats, None, bools,
             frozensets, and the str '3' beside the int 3): the dump's key nodes equal torch's
             and keep their order, `ls` prints them distinguishably where Python's repr does,
             `convert --not-weights-only` writes back a dict torch loads with the same keys of
             the same types.
  devices    a CPU checkpoint whose pickled location tags are rewritten to 'cuda:0', 'mps',
             'meta', 'xpu:1', 'privateuseone:0' (this machine has no GPU; torch.load with
             map_location='cpu' accepts every tag): `ls` marks each tensor device=TAG, `dump`
             gives "device": TAG for every tensor and storage and the same values as torch;
             convert writes 'cpu' and torch loads it equal. A bytes tag that is not ASCII is
             refused by torch.load and by statedict (exit 3, naming the tag and storage key).
  dtypes     a storage class no torch has (torch.FooStorage): exit 3 "unsupported dtype
             torch.FooStorage for storage key '0' (value of key 'w')" (SDICT_E_DTYPE), scan
             says REFUSED; a global
             that is no storage class in the same place (torch.load, os.FooStorage) stays
             "unsafe".
  numpy      numpy arrays saved with pickle_protocol=5 (numpy's _frombuffer, this torch's
             numpy): C and Fortran order, big-endian, read-only, 0-d, complex, bool; the dump's
             digests equal those of the arrays' little-endian C-order bytes, and convert
             --not-weights-only writes arrays torch loads back equal (values, dtype, order).
Exit 0 all agree, 1 on the first disagreement, 77 (ctest skip) when torch cannot be imported.
"""
import hashlib
import json
import os
import re
import struct
import subprocess
import sys
import warnings
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

FAILS = []


def check(cond, what):
    if not cond:
        FAILS.append(what)
        print("FAIL:", what)
    return cond


def run(statedict, *args):
    r = subprocess.run([statedict] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return r.returncode, r.stdout.decode("utf-8", "replace"), r.stderr.decode("utf-8", "replace")


def convert_loads_same(statedict, wd, path, what):
    """`statedict convert` of path into wd; checks that torch loads the result as it loads
    path (torch_dump + compare_dump). Returns the converted file's path, or None when convert
    failed."""
    import compare_dump
    import torch_dump
    conv = os.path.join(wd, "conv_" + os.path.basename(path))
    rc, out, err = run(statedict, "convert", path, conv)
    if not check(rc == 0, "%s: convert: %d %s" % (what, rc, err)):
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = json.loads(json.dumps(torch_dump.dump(path, "prefer")))
        b = json.loads(json.dumps(torch_dump.dump(conv, True)))
    try:
        compare_dump.compare(a, b, container=False)
    except compare_dump.Mismatch as e:
        check(False, "%s: torch loads the converted file differently: %s" % (what, e))
    return conv


def tload(path, **kw):
    import torch
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kw.setdefault("map_location", "cpu")
        if "weights_only" in torch.load.__code__.co_varnames:
            kw.setdefault("weights_only", False)
        return torch.load(path, **kw)


def same_as_torch(statedict, path, label):
    """dump --json of path against torch's own load of it (torch_dump / compare_dump)."""
    import compare_dump
    import torch_dump
    rc, out, err = run(statedict, "dump", "--json", path)
    if not check(rc == 0, "%s: dump exit %d: %s" % (label, rc, err.strip())):
        return None
    act = json.loads(out)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exp = json.loads(json.dumps(torch_dump.dump(path, "prefer")))
    try:
        compare_dump.compare(exp, act)
    except compare_dump.Mismatch as e:
        check(False, "%s: dump differs from torch.load: %s" % (label, e))
    return act


def leaves(node, out):
    """Every tensor and storage node of a dump, in order."""
    if isinstance(node, dict):
        if node.get("type") in ("tensor", "storage"):
            out.append(node)
        for v in node.values():
            leaves(v, out)
    elif isinstance(node, list):
        for v in node:
            leaves(v, out)
    return out


def rewrite_pickle(src, dst, old, new, numel=None):
    """Copies the zip src to dst with every `old` in its data.pkl replaced by `new` (and, with
    numel=(a, b), the storage element count after the memoized 'cpu' from BININT1 a to b)."""
    with zipfile.ZipFile(src) as z, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as w:
        for info in z.infolist():
            data = z.read(info.filename)
            if info.filename.endswith("data.pkl"):
                check(old in data, "%s: pattern %r not in data.pkl" % (src, old))
                data = data.replace(old, new)
                if numel:
                    data, k = re.subn(re.escape(CPU) + rb"(q.)K" + bytes([numel[0]]),
                                      CPU + rb"\1K" + bytes([numel[1]]), data)
                    check(k == 1, "%s: storage numel not found" % src)
            w.writestr(info.filename, data)


def binunicode(s):
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


CPU = binunicode("cpu")


# ---- storages --------------------------------------------------------------------------------

def storages(sd, wd):
    import torch
    base = torch.arange(6, dtype=torch.float32)
    d = {"s": torch.arange(4.).storage(), "i": torch.tensor([7, -8, 9]).storage(),
         "t": base[2:], "shared": base.storage()}
    if hasattr(torch.Tensor, "untyped_storage"):
        d["u"] = torch.tensor([1.5], dtype=torch.float32).untyped_storage()
    path = os.path.join(wd, "storages.pt")
    torch.save(d, path)
    legacy = os.path.join(wd, "storages_legacy.pt")
    # (torch 2.x cannot load a bare UntypedStorage back from its own legacy format)
    torch.save({k: v for k, v in d.items() if k != "u"}, legacy,
               _use_new_zipfile_serialization=False)

    for p in (path, legacy):
        same_as_torch(sd, p, os.path.basename(p))
        rc, out, err = run(sd, "ls", p)
        check(rc == 0, "ls %s: exit %d %s" % (p, rc, err))
        lines = {l.split()[0]: l for l in out.splitlines() if l and not l[0].isdigit()}
        check(re.fullmatch(r"s\s+float32\s+storage\(4\)\s+16\s+device=cpu", lines.get("s", "")),
              "ls storage line: %r" % lines.get("s"))
        check(re.fullmatch(r"i\s+int64\s+storage\(3\)\s+24\s+device=cpu", lines.get("i", "")),
              "ls int storage line: %r" % lines.get("i"))
        check(re.search(r"shared\s+float32\s+storage\(6\)\s+24\s+device=cpu shared=", lines.get("shared", "")),
              "ls shared storage line: %r" % lines.get("shared"))
        check("shared=" in lines.get("t", ""), "ls: tensor t shares the bare storage: %r" % lines.get("t"))
        if "u" in d and p == path:
            check(re.fullmatch(r"u\s+uint8\s+storage\(4\)\s+4\s+device=cpu", lines.get("u", "")),
                  "ls untyped storage line: %r" % lines.get("u"))
        nst = 4 if "u" in d and p == path else 3
        check(re.search(r"^1 tensor, 16 bytes; %d storages?, \d+ bytes;" % nst, out, re.M),
              "ls summary counts the storages: %s" % out.splitlines()[-1])
        rc, out, err = run(sd, "ls", "--json", p)
        js = {e["key"]: e for e in json.loads(out)["leaves"]}
        check(js["s"]["type"] == "storage" and js["s"]["dtype"] == "float32" and js["s"]["numel"] == 4
              and js["s"]["nbytes"] == 16 and js["s"]["device"] == "cpu", "ls --json storage: %r" % js["s"])

    # show: the elements
    rc, out, err = run(sd, "show", path, "s")
    check(rc == 0 and out.splitlines()[0] == "s: storage float32, numel 4, 16 bytes, device=cpu"
          and "tensor([0., 1., 2., 3.])" in out, "show storage: %r %r" % (out, err))
    rc, out, err = run(sd, "show", path, "i")
    check(rc == 0 and "tensor([ 7, -8,  9])" in out, "show int storage: %r" % out)

    # diff: content
    d2 = dict(d)
    d2["s"] = torch.tensor([0., 1., 2.5, 3.]).storage()
    changed = os.path.join(wd, "storages_changed.pt")
    torch.save(d2, changed)
    rc, out, err = run(sd, "diff", path, changed)
    check(rc == 1 and "values: s  1 of 4 elements differ; max abs diff 0.5" in out
          and "1 difference" in out, "diff storages: %d %r" % (rc, out))
    rc, out, err = run(sd, "diff", path, legacy)
    if "u" in d:   # the legacy copy lacks u
        ok = rc == 1 and out.startswith("only in A: u") and out.endswith("1 difference\n")
    else:
        ok = rc == 0 and out == "no differences\n"
    check(ok, "diff zip vs legacy storages: %d %r" % (rc, out))

    # convert: torch loads the same storages back
    for p in (path, legacy):
        conv = convert_loads_same(sd, wd, p, p)
        if not conv:
            continue
        x, y = tload(p), tload(conv)
        check(type(x["s"]) is type(y["s"]) and y["s"].dtype == torch.float32 and
              list(y["s"]) == [0.0, 1.0, 2.0, 3.0], "convert: storage s comes back %r" % (y["s"],))
        rc, out, err = run(sd, "diff", p, conv)
        check(rc == 0, "diff against its convert: %r" % out)


# ---- dict keys -------------------------------------------------------------------------------

def keys(sd, wd):
    import torch
    d = {torch.float32: "dtype", (1, "a"): "tuple", 3: "int", "3": "str", 2.5: "float",
         None: "none", True: "bool", frozenset({1, 2}): "frozenset", torch.device("cuda", 1): "dev",
         (frozenset({"x"}), 1.0): "nested"}
    path = os.path.join(wd, "keys.pt")
    torch.save(d, path)
    act = same_as_torch(sd, path, "keys.pt")
    if act:
        types = [k[0]["type"] for k in act["root"]["items"]]
        check(types == ["dtype", "tuple", "int", "str", "float", "none", "bool", "set", "device",
                        "tuple"], "dump key types in order: %r" % types)
        check(act["root"]["items"][7][0].get("frozenset") is True, "dump marks the frozenset key")
    rc, out, err = run(sd, "ls", path)
    first = [l.split("  ")[0].strip() for l in out.splitlines()[:-1]]
    check(first[0] == "torch.float32" and first[7] == "frozenset({1, 2})" and first[5] == "None"
          and first[6] == "True" and first[4] == "2.5", "ls keys: %r" % first)
    conv = os.path.join(wd, "keys_conv.pt")
    rc, out, err = run(sd, "convert", "--not-weights-only", path, conv)
    if check(rc == 0, "convert keys: %s" % err):
        back = tload(conv)
        check(list(back.keys()) == list(d.keys()) and
              [type(k) for k in back] == [type(k) for k in d] and
              list(back.values()) == list(d.values()), "convert keys: torch loads %r" % (back,))
    rc, out, err = run(sd, "diff", path, conv)
    check(rc == 0, "diff keys against convert: %r" % out)


# ---- devices ---------------------------------------------------------------------------------

def devices(sd, wd):
    import torch
    base = os.path.join(wd, "dev_cpu.pt")
    torch.save({"w": torch.arange(4.), "b": torch.ones(2, 3)[:, 1], "s": torch.arange(3.).storage()}, base)
    legacy = os.path.join(wd, "dev_cpu_legacy.pt")
    torch.save({"w": torch.arange(4.)}, legacy, _use_new_zipfile_serialization=False)
    for tag in ("cuda:0", "mps", "meta", "xpu:1", "privateuseone:0"):
        p = os.path.join(wd, "dev_%s.pt" % tag.replace(":", "_"))
        rewrite_pickle(base, p, CPU, binunicode(tag))
        act = same_as_torch(sd, p, p)
        if act:
            devs = [n["device"] for n in leaves(act["root"], [])]
            check(devs == [tag] * 3, "%s: dump devices %r" % (tag, devs))
        rc, out, err = run(sd, "ls", p)
        rows = out.splitlines()
        check(rc == 0 and rows[0].endswith("device=" + tag) and rows[1].split()[-1].startswith("non-contiguous")
              is False and ("device=" + tag) in rows[1] and rows[2].endswith("device=" + tag),
              "%s: ls %r" % (tag, out))
        rc, out, err = run(sd, "show", p, "w")
        check(rc == 0 and ("device=" + tag) in out.splitlines()[0] and "tensor([0., 1., 2., 3.])" in out,
              "%s: show %r" % (tag, out))
        rc, out, err = run(sd, "diff", base, p)
        check(rc == 1 and ("device: w  cpu -> " + tag) in out and "3 differences" in out,
              "%s: diff %r" % (tag, out))
        conv = convert_loads_same(sd, wd, p, tag)
        if conv:
            # the rewrite says cpu: it loads without map_location on this machine
            check(torch.equal(torch.load(conv)["w"], torch.arange(4.)), "%s: convert loads" % tag)
        # legacy stream format: same tags
        lp = os.path.join(wd, "dev_legacy_%s.pt" % tag.replace(":", "_"))
        with open(legacy, "rb") as f:
            raw = f.read()
        check(CPU in raw, "legacy file holds the cpu tag")
        with open(lp, "wb") as f:
            f.write(raw.replace(CPU, binunicode(tag)))
        act = same_as_torch(sd, lp, lp)
        if act:
            check([n["device"] for n in leaves(act["root"], [])] == [tag], "%s legacy: devices" % tag)

    # a bytes tag that is not ASCII: torch.load refuses it, so does statedict
    bad = os.path.join(wd, "dev_not_ascii.pt")
    rewrite_pickle(base, bad, CPU, b"C\x02\xff\xfe")
    try:
        tload(bad)
        check(False, "torch.load accepted a non-ASCII bytes location")
    except Exception:
        pass
    rc, out, err = run(sd, "ls", bad)
    check(rc == 3 and "dev_not_ascii.pt" in err and "storage '0': location tag b'\\xff\\xfe' is not ASCII" in err
          and "SDICT_E_STORAGE" in err, "non-ASCII location: %d %r" % (rc, err))
    # an ASCII bytes tag (Python 2 writers): torch 1.13 decodes it; statedict too
    ok = os.path.join(wd, "dev_bytes.pt")
    rewrite_pickle(base, ok, CPU, b"C\x06cuda:1")
    rc, out, err = run(sd, "dump", "--json", ok)
    check(rc == 0 and [n["device"] for n in leaves(json.loads(out)["root"], [])] == ["cuda:1"] * 3,
          "ASCII bytes location: %r" % err)


# ---- storage classes -------------------------------------------------------------------------

def dtypes(sd, wd):
    import torch
    base = os.path.join(wd, "cls_float.pt")
    torch.save({"w": torch.arange(4.)}, base)
    cases = [("torch\nFooStorage", 3, "unsupported: ", "unsupported dtype torch.FooStorage for storage key '0' (value of key 'w')",
              "SDICT_E_DTYPE", "REFUSED  torch.FooStorage"),
             ("torch\nload", 3, "unsafe: ", "global 'torch.load' is not on the allow-list",
              "SDICT_E_PICKLE_UNSAFE_GLOBAL", "REFUSED  torch.load"),
             ("os\nFooStorage", 3, "unsafe: ", "global 'os.FooStorage' is not on the allow-list",
              "SDICT_E_PICKLE_UNSAFE_GLOBAL", "REFUSED  os.FooStorage"),
             ("torch\nUntypedStorage", 0, "", "", "", "ALLOWED  torch.UntypedStorage")]
    for glob, want_rc, cls, msg, code, scan in cases:
        p = os.path.join(wd, "cls_%s.pt" % glob.replace("\n", "_"))
        new = b"c" + glob.encode() + b"\n"
        # torch.UntypedStorage counts bytes: a uint8 storage of 16 bytes, as torch reads it
        rewrite_pickle(base, p, b"ctorch\nFloatStorage\n", new,
                       (4, 16) if glob == "torch\nUntypedStorage" else None)
        rc, out, err = run(sd, "ls", p)
        if want_rc == 0:
            # torch rebuilds the tensor over a uint8 storage as uint8 (its storage's dtype)
            check(rc == 0 and re.match(r"w\s+uint8\s+\[4\]\s+4$", out.splitlines()[0]),
                  "%s: ls %d %r %r" % (glob, rc, out, err))
            same_as_torch(sd, p, p)
        else:
            check(rc == want_rc and msg in err and code in err and err.startswith("statedict: " + cls),
                  "%s: ls %d %r" % (glob, rc, err))
        rc, out, err = run(sd, "scan", p)
        check(scan in out and (rc == 0) == scan.startswith("ALLOWED"), "%s: scan %d %r" % (glob, rc, out))


# ---- numpy under protocol 5 ------------------------------------------------------------------

def numpy5(sd, wd):
    import numpy as np
    import torch
    ro = np.arange(3, dtype=np.float32)
    ro.flags.writeable = False
    d = {"a": np.arange(5), "f": np.asfortranarray(np.arange(6.).reshape(2, 3)),
         "be": np.arange(4, dtype=">i4"), "ro": ro, "z": np.array(2.5),
         "c": np.array([1 + 2j, -3j], dtype=np.complex64), "b": np.array([True, False, True])}
    path = os.path.join(wd, "numpy5.pt")
    torch.save(d, path, pickle_protocol=5)
    with zipfile.ZipFile(path) as z:
        pkl = [z.read(n) for n in z.namelist() if n.endswith("data.pkl")][0]
    check(b"_frombuffer" in pkl, "numpy wrote _frombuffer under protocol 5")
    rc, out, err = run(sd, "dump", "--json", path)
    if not check(rc == 0, "numpy5 dump: %s" % err):
        return
    items = {k["value"]: v for k, v in json.loads(out)["root"]["items"]}
    for k, arr in d.items():
        n = items[k]
        le = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<"))
        check(n["type"] == "tensor" and n["shape"] == list(arr.shape) and
              n["sha256"] == hashlib.sha256(le.tobytes()).hexdigest(), "numpy5 %s: %r" % (k, n))
    check(items["f"]["stride"] == [1, 2], "numpy5 f keeps Fortran order: %r" % items["f"]["stride"])
    conv = os.path.join(wd, "numpy5_conv.pt")
    rc, out, err = run(sd, "convert", "--not-weights-only", path, conv)
    if check(rc == 0, "numpy5 convert: %s" % err):
        back = tload(conv)
        for k, arr in d.items():
            b = back[k]
            check(isinstance(b, np.ndarray) and b.shape == arr.shape and np.array_equal(b, arr)
                  and b.dtype.newbyteorder("=") == arr.dtype.newbyteorder("=")
                  and b.flags.f_contiguous == arr.flags.f_contiguous,
                  "numpy5 convert %s: %r (%s) vs %r (%s)" % (k, b, getattr(b, "dtype", None), arr, arr.dtype))


def main(argv):
    warnings.simplefilter("ignore")   # TypedStorage deprecation notes
    if len(argv) != 3:
        print(__doc__)
        return 2
    try:
        import torch
    except Exception as e:  # noqa: BLE001
        print("SKIP: torch cannot be imported:", e)
        return 77
    sd, wd = argv[1], argv[2]
    os.makedirs(wd, exist_ok=True)
    print("torch", torch.__version__)
    for part in (storages, keys, devices, dtypes, numpy5):
        n = len(FAILS)
        part(sd, wd)
        print("%-9s %s" % (part.__name__, "ok" if len(FAILS) == n else "%d failures" % (len(FAILS) - n)))
    print("%d failures" % len(FAILS))
    return 1 if FAILS else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
