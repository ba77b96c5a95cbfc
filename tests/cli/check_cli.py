#!/usr/bin/python3
"""Checks one `statedict` subcommand against what real PyTorch computes for the same files.

usage: check_cli.py SUBTEST STATEDICT DIR
  SUBTEST  ls | dump | show | diff | convert | verify | scan
  DIR      where gen_cli.py wrote its files (it is run here when DIR lacks them)

Expected values are computed here with torch from the same files (never typed in), except the
exit statuses and line formats, which are the CLI's documented contract. Exits 77 (skip) when
torch is missing, 1 with a list of failures otherwise.
"""
import hashlib
import json
import math
import os
import re
import struct
import subprocess
import sys

try:
    import torch
except ImportError as e:
    print(f"skip: /usr/bin/python3 cannot import torch ({e})")
    sys.exit(77)

SUBTEST, BIN, DIR = sys.argv[1], sys.argv[2], sys.argv[3]
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what)


def run(*args):
    p = subprocess.run([BIN, *args], capture_output=True, text=True, timeout=120)
    return p.returncode, p.stdout, p.stderr


def path(name):
    return os.path.join(DIR, name)


def load(name):
    return torch.load(path(name), map_location="cpu")


def flatten(obj, prefix=""):
    """Leaves as the CLI names them: dotted keys, list items by index."""
    out = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(obj, (list, tuple)) and any(isinstance(x, (list, tuple, dict, torch.Tensor))
                                                for x in obj):
        for i, v in enumerate(obj):
            out.update(flatten(v, f"{prefix}.{i}" if prefix else str(i)))
    else:
        out[prefix] = obj
    return out


def dtype_name(t):
    return str(t.dtype).replace("torch.", "")


def elem_bytes(t):
    """Elements in C-contiguous order, little-endian, as the dump digest defines them."""
    t = t.contiguous()
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    return t.numpy().tobytes()


# ---- ls --------------------------------------------------------------------------------------

def ls_lines(name, *opts):
    rc, out, err = run("ls", *opts, path(name))
    check(rc == 0, f"ls {name}: exit {rc}: {err}")
    lines = out.rstrip("\n").split("\n")
    rows = {}
    for line in lines[:-1]:
        key, rest = line.split("  ", 1)
        rows[key.strip()] = rest.split()
    return rows, lines[-1]


def test_ls():
    for name in ("lenet.pt", "lenet_legacy.pt", "checkpoint.tar", "views.pt", "dtypes.pt",
                 "high_rank.pt"):
        rows, summary = ls_lines(name)
        leaves = flatten(load(name))
        tensors = {k: v for k, v in leaves.items() if isinstance(v, torch.Tensor)}
        for k, t in tensors.items():
            r = rows.get(k)
            check(r is not None, f"ls {name}: no line for {k}")
            if r is None:
                continue
            check(r[0] == dtype_name(t), f"ls {name} {k}: dtype {r[0]} != {dtype_name(t)}")
            shape = "[" + ", ".join(str(s) for s in t.shape) + "]"
            shown = " ".join(r[1:1 + max(1, t.dim())])
            check(shown == shape, f"ls {name} {k}: shape {shown} != {shape}")
            nbytes = t.numel() * t.element_size()
            check(r[1 + max(1, t.dim())] == str(nbytes), f"ls {name} {k}: bytes {r} != {nbytes}")
        total = sum(t.numel() * t.element_size() for t in tensors.values())
        noun = "tensor" if len(tensors) == 1 else "tensors"
        check(summary.startswith(f"{len(tensors)} {noun}, {total} bytes;"),
              f"ls {name}: summary {summary!r} (want {len(tensors)} tensors, {total} bytes)")
        fmt = "legacy" if "legacy" in name else "zip"
        check(f"format {fmt}" in summary, f"ls {name}: summary {summary!r} lacks format {fmt}")

    # the tutorial's general checkpoint: non-tensor leaves with their values
    rows, _ = ls_lines("checkpoint.tar")
    ck = load("checkpoint.tar")
    check(rows.get("epoch") == ["int", str(ck["epoch"])], f"ls epoch: {rows.get('epoch')}")
    check(rows.get("loss") == ["float", repr(ck["loss"])], f"ls loss: {rows.get('loss')}")
    lr = ck["optimizer_state_dict"]["param_groups"][0]["lr"]
    check(rows.get("optimizer_state_dict.param_groups.0.lr") == ["float", repr(lr)],
          f"ls lr: {rows.get('optimizer_state_dict.param_groups.0.lr')}")
    check("optimizer_state_dict.state.0.momentum_buffer" in rows, "ls: no momentum_buffer line")
    params = ck["optimizer_state_dict"]["param_groups"][0]["params"]
    got = rows.get("optimizer_state_dict.param_groups.0.params", [])
    check(" ".join(got[1:]) == repr(params), f"ls params: {got} vs {params}")

    # marks: the transposed view is non-contiguous; base, t and slice share one storage
    rows, _ = ls_lines("views.pt")
    check(any(m.startswith("non-contiguous") for m in rows["t"]), f"ls views t: {rows['t']}")
    check(not any(m.startswith("non-contiguous") for m in rows["base"]), f"ls views base: {rows['base']}")
    for k in ("base", "t", "slice"):
        check(any(m.startswith("shared=") for m in rows[k]), f"ls views {k} not shared: {rows[k]}")
    check(not any(m.startswith("shared=") for m in rows["scalar"]), f"ls scalar: {rows['scalar']}")

    rc, out, err = run("ls", "--json", path("checkpoint.tar"))
    check(rc == 0, f"ls --json: exit {rc} {err}")
    doc = json.loads(out)
    keys = [e["key"] for e in doc["leaves"] if e["type"] == "tensor"]
    want = [k for k, v in flatten(ck).items() if isinstance(v, torch.Tensor)]
    check(keys == want, f"ls --json tensor keys {keys} != {want}")
    check(doc["path"] == path("checkpoint.tar") and doc["metadata"] is None,
          f"ls --json path/metadata {doc['path']!r} {doc['metadata']!r}")
    leaves = {e["key"]: e for e in doc["leaves"]}
    check(leaves["epoch"]["value"] == ck["epoch"] and leaves["epoch"]["repr"] == str(ck["epoch"]),
          f"ls --json epoch {leaves['epoch']}")
    check(leaves["loss"]["value"] == ck["loss"] and leaves["loss"]["repr"] == repr(ck["loss"]),
          f"ls --json loss {leaves['loss']}")

    # exactness of numbers in ls --json (the schema's rule)
    rc, out, err = run("ls", "--json", path("dtypes.pt"))
    check(rc == 0, f"ls --json dtypes: exit {rc} {err}")
    leaves = {e["key"]: e for e in json.loads(out)["leaves"]}
    for k, want in load("dtypes.pt")["exact"].items():
        check_exact(leaves["exact." + k], want, f"ls --json exact {k}")

    # several files: a header per file, the worst exit status, one JSON document
    names = ["lenet.pt", "checkpoint.tar"]
    rc, out, err = run("ls", *[path(n) for n in names])
    check(rc == 0, f"ls two files: exit {rc} {err}")
    heads = [l for l in out.splitlines() if l.startswith("==> ")]
    check(heads == [f"==> {path(n)} <==" for n in names], f"ls two files: headers {heads}")
    check(out.split("\n\n")[0] == f"==> {path('lenet.pt')} <==\n" + run("ls", path("lenet.pt"))[1].rstrip("\n"),
          "ls two files: the first listing is not the single-file listing under its header")
    missing = path("no-such-file.pt")
    rc, out, err = run("ls", path("lenet.pt"), missing, path("checkpoint.tar"))
    check(rc == 3, f"ls with a missing file: exit {rc}, want 3")
    check("no-such-file.pt" in err and out.count("==> ") == 3 and "format zip" in out.split(missing)[1],
          f"ls with a missing file: the other files are listed: {out[-300:]!r} {err!r}")
    rc, out, err = run("ls", "--json", path("lenet.pt"), missing, path("checkpoint.tar"))
    check(rc == 3, f"ls --json with a missing file: exit {rc}, want 3")
    files = json.loads(out)["files"]
    check([f["path"] for f in files] == [path("lenet.pt"), missing, path("checkpoint.tar")],
          f"ls --json files: {[f['path'] for f in files]}")
    check("leaves" in files[0] and "leaves" in files[2] and files[1]["error"]["status"] == "unreadable"
          and "no-such-file.pt" in files[1]["error"]["message"], f"ls --json error entry {files[1]}")
    rc1, one_json, _ = run("ls", "--json", path("lenet.pt"))
    check(files[0] == json.loads(one_json), "ls --json: a file's entry differs from its single listing")


# ---- dump ------------------------------------------------------------------------------------

def dump(name, *opts):
    rc, out, err = run("dump", "--json", *opts, path(name))
    check(rc == 0, f"dump {name}: exit {rc}: {err}")
    return json.loads(out) if rc == 0 else None


def dict_get(node, key):
    for k, v in node["items"]:
        if k.get("value") == key:
            return v
    raise KeyError(key)


def check_tensor(node, t, what, storage=None):
    check(node["type"] == "tensor", f"{what}: type {node['type']}")
    check(node["dtype"] == dtype_name(t), f"{what}: dtype {node['dtype']}")
    check(node["shape"] == list(t.shape), f"{what}: shape {node['shape']} != {list(t.shape)}")
    check(node["stride"] == list(t.stride()), f"{what}: stride {node['stride']} != {t.stride()}")
    check(node["storage_offset"] == t.storage_offset(), f"{what}: offset {node['storage_offset']}")
    check(node["requires_grad"] == t.requires_grad, f"{what}: requires_grad")
    digest = hashlib.sha256(elem_bytes(t)).hexdigest()
    check(node["sha256"] == digest, f"{what}: sha256 {node['sha256']} != {digest}")
    check(node["device"] == "cpu", f"{what}: device {node['device']}")
    check(list(node.keys()) == ["type", "dtype", "shape", "stride", "storage_offset",
                                "requires_grad", "parameter", "storage", "device", "sha256"],
          f"{what}: key order {list(node.keys())}")


def check_exact(node, want, what):
    """A dump node (or an ls --json leaf) of an int or float by the JSON schema's rule: a JSON
    number where exact (ints within +-2^53, finite floats, bit for bit), else a string with the
    exact text."""
    got = node.get("value")
    if isinstance(want, int):
        check(node["type"] == "int", f"{what}: type {node['type']}")
        if -2 ** 53 <= want <= 2 ** 53:
            check(type(got) is int and got == want, f"{what}: {got!r} should be the number {want}")
        else:
            check(got == str(want), f"{what}: {got!r} should be the string {str(want)!r}")
    else:
        check(node["type"] == "float", f"{what}: type {node['type']}")
        if math.isnan(want):
            check(got == "nan", f"{what}: {got!r} should be 'nan'")
        elif math.isinf(want):
            check(got == ("inf" if want > 0 else "-inf"), f"{what}: {got!r} should be inf text")
        else:
            check(type(got) is float and struct.pack("<d", got) == struct.pack("<d", want),
                  f"{what}: {got!r} should be the number {want!r}")


def test_dump():
    d = dump("dtypes.pt")
    check(d["format"] == "zip" and d["byteorder"] == "little", f"dump header {d['format']} {d['byteorder']}")
    src = load("dtypes.pt")
    root = d["root"]
    check(root["type"] == "dict" and root["ordered"] is False and "attrs" not in root,
          "dump dtypes: root should be a plain dict without attrs")
    for k, t in src.items():
        if isinstance(t, torch.Tensor):
            check_tensor(dict_get(root, k), t, f"dump dtypes {k}")
    v = dict_get(root, "values")
    vals = src["values"]
    check(dict_get(v, "none") == {"type": "none"}, "dump none")
    check(dict_get(v, "t") == {"type": "bool", "value": True}, "dump bool")
    check(dict_get(v, "big_int") == {"type": "int", "value": str(vals["big_int"])}, "dump big int")
    check(dict_get(v, "neg") == {"type": "int", "value": vals["neg"]}, "dump negative int")
    f = dict_get(v, "f")
    check(f == {"type": "float", "value": vals["f"]}, f"dump float {f}")
    ex = dict_get(root, "exact")
    for k, want in src["exact"].items():
        check_exact(dict_get(ex, k), want, f"dump exact {k}")
    check(d["metadata"] is None, f"dump: a torch file has no metadata: {d['metadata']!r}")
    check(dict_get(v, "s") == {"type": "str", "value": vals["s"]}, "dump str")
    check(dict_get(v, "raw") == {"type": "bytes", "hex": vals["raw"].hex()}, "dump bytes")
    tup = dict_get(v, "tup")
    check(tup["type"] == "tuple" and [i["type"] for i in tup["items"]] == ["int", "float", "str"],
          f"dump tuple {tup}")
    check(dict_get(v, "lst") == {"type": "list", "items": []}, "dump empty list")
    check(dict_get(v, "dt") == {"type": "dtype", "value": "float16"}, "dump dtype value")
    intkey = [kv for kv in v["items"] if kv[0]["type"] == "int"]
    want = [(str(k), vals[k]) for k in vals if isinstance(k, int)]
    check([(str(k["value"]), n["value"]) for k, n in intkey] == want,
          f"dump int keys {intkey} != {want}")
    check([type(k["value"]) for k, n in intkey] == [int, str], f"dump int keys: 7 a number, "
          f"2**65 a string: {intkey}")
    fk = [kv for kv in v["items"] if kv[0]["type"] == "float"]
    check(len(fk) == 1 and fk[0][0]["value"] == 1.5, f"dump float key {fk}")
    tk = [kv for kv in v["items"] if kv[0]["type"] == "tuple"]
    check(len(tk) == 1 and tk[0][0]["items"] == [{"type": "int", "value": 1},
                                                  {"type": "int", "value": 2}], f"dump tuple key {tk}")

    # module state_dict: OrderedDict with _metadata attrs, in torch's key order
    d = dump("lenet.pt")
    sd = load("lenet.pt")
    root = d["root"]
    check(root["type"] == "dict" and root["ordered"] is True, "dump lenet: OrderedDict")
    check([k["value"] for k, _ in root["items"]] == list(sd.keys()), "dump lenet: key order")
    attrs = root.get("attrs", [])
    check(len(attrs) == 1 and attrs[0][0] == "_metadata", f"dump lenet attrs {attrs[:1]}")
    if attrs:
        meta = attrs[0][1]
        check([k["value"] for k, _ in meta["items"]] == list(sd._metadata.keys()), "dump _metadata keys")
    for k, t in sd.items():
        check_tensor(dict_get(root, k), t, f"dump lenet {k}")

    # views: strides, offsets and one storage key for the three views of one storage
    d = dump("views.pt")
    src = load("views.pt")
    for k, t in src.items():
        check_tensor(dict_get(d["root"], k), t, f"dump views {k}")
    keys = {dict_get(d["root"], k)["storage"] for k in ("base", "t", "slice")}
    check(len(keys) == 1 and None not in keys, f"dump views: storages {keys}")

    # legacy format: same tensors, format "legacy"
    d = dump("lenet_legacy.pt")
    check(d["format"] == "legacy", f"dump legacy format {d['format']}")
    for k, t in sd.items():
        check_tensor(dict_get(d["root"], k), t, f"dump legacy {k}")
    # --copy gives the same document as the mapped load
    check(dump("lenet.pt", "--copy") == dump("lenet.pt"), "dump --copy differs from mapped load")


# ---- show ------------------------------------------------------------------------------------

def test_show():
    src = load("dtypes.pt")
    views = load("views.pt")
    cases = [("dtypes.pt", "i64", src["i64"]), ("dtypes.pt", "f16", src["f16"]),
             ("dtypes.pt", "b", src["b"]), ("dtypes.pt", "i8", src["i8"]),
             ("dtypes.pt", "big", src["big"]), ("dtypes.pt", "c64", src["c64"]),
             ("dtypes.pt", "mixed", src["mixed"]), ("dtypes.pt", "cube", src["cube"]),
             ("dtypes.pt", "long4", src["long4"]), ("dtypes.pt", "bf16", src["bf16"]),
             ("param.pt", "param", load("param.pt")["param"]),
             ("views.pt", "t", views["t"]), ("views.pt", "slice", views["slice"]),
             ("views.pt", "scalar", views["scalar"]), ("views.pt", "empty", views["empty"])]
    high = load("high_rank.pt")
    cases += [("high_rank.pt", k, high[k]) for k in ("r20", "r100", "summ")]
    for name, key, t in cases:
        rc, out, err = run("show", path(name), key)
        check(rc == 0, f"show {name} {key}: exit {rc} {err}")
        head, _, body = out.partition("\n")
        check(head.startswith(f"{key}: {dtype_name(t)} "), f"show {key} header {head!r}")
        check(body.rstrip("\n") == str(t), f"show {key}:\n{body}\nwant:\n{t}")
    # a summarised tensor: first and last 3 rows and columns around "..."
    rc, out, _ = run("show", path("dtypes.pt"), "big")
    check(rc == 0 and out.count("...") >= 2, f"show big not summarised: {out}")
    big = src["big"]
    first = f"{big[0, 0].item():.4e}"
    last = f"{big[-1, -1].item():.4e}"
    check(first in out and last in out, f"show big: {first} / {last} not in output")
    # a subtree lists its leaves with full keys; a scalar prints its value
    rc, out, _ = run("show", path("checkpoint.tar"), "optimizer_state_dict.param_groups.0")
    check(rc == 0 and "optimizer_state_dict.param_groups.0.momentum  float  0.9" in out,
          f"show subtree: {out}")
    rc, out, _ = run("show", path("checkpoint.tar"), "epoch")
    check(rc == 0 and out.strip() == "epoch: int  5", f"show epoch: {out!r}")
    # every key ls prints resolves in show, even float, tuple and past-int64 dict keys
    rows, _ = ls_lines("dtypes.pt")
    for key in rows:
        rc, out, err = run("show", path("dtypes.pt"), key)
        check(rc == 0 and out.startswith(key), f"show dtypes.pt {key!r}: exit {rc} {err}")
    for key, want in (("values.1.5", "float key"), ("values.(1, 2)", "tuple key"),
                      (f"values.{2 ** 65}", "big key")):
        rc, out, err = run("show", path("dtypes.pt"), key)
        check(rc == 0 and out.strip() == f"{key}: str  {want!r}", f"show {key}: {rc} {out!r} {err}")
    rc, _, err = run("show", path("checkpoint.tar"), "no.such.key")
    check(rc == 1 and "no.such.key" in err, f"show missing key: exit {rc} {err}")


# ---- diff ------------------------------------------------------------------------------------

def test_diff():
    rc, out, _ = run("diff", path("lenet.pt"), path("lenet.pt"))
    check(rc == 0 and out.strip() == "no differences", f"diff self: {rc} {out}")
    rc, out, err = run("diff", path("lenet.pt"), path("lenet_legacy.pt"))
    check(rc == 0, f"diff zip vs legacy of one state_dict: {rc} {out} {err}")
    rc, out, _ = run("diff", path("checkpoint.tar"), path("checkpoint.tar"))
    check(rc == 0, f"diff checkpoint self: {rc} {out}")

    a, b = load("lenet.pt"), load("lenet_b.pt")
    rc, out, err = run("diff", path("lenet.pt"), path("lenet_b.pt"))
    check(rc == 1, f"diff lenet lenet_b: exit {rc} {err}")
    lines = out.strip().split("\n")
    only_a = sorted(set(a) - set(b))
    only_b = sorted(set(b) - set(a))
    for k in only_a:
        check(any(l.startswith(f"only in A: {k}  ") for l in lines), f"diff: no 'only in A: {k}'")
    for k in only_b:
        check(any(l.startswith(f"only in B: {k}  ") for l in lines), f"diff: no 'only in B: {k}'")
    for k in set(a) & set(b):
        ta, tb = a[k], b[k]
        if ta.dtype != tb.dtype:
            want = f"dtype: {k}  {dtype_name(ta)} -> {dtype_name(tb)}"
            check(want in lines, f"diff: no {want!r}")
        if ta.shape != tb.shape:
            want = f"shape: {k}  {list(ta.shape)} -> {list(tb.shape)}"
            check(want in lines, f"diff: no {want!r}")
            continue
        close = torch.isclose(ta.double(), tb.double(), rtol=1e-5, atol=1e-8)
        vline = [l for l in lines if l.startswith(f"values: {k}  ")]
        if bool(close.all()):
            check(not vline, f"diff: {k} within tolerance but reported: {vline}")
            continue
        check(len(vline) == 1, f"diff: no values line for {k}")
        if vline:
            m = re.match(r"values: \S+  (\d+) of (\d+) elements differ; max abs diff (\S+), "
                         r"max rel diff (\S+)$", vline[0])
            check(m is not None, f"diff values line format {vline[0]!r}")
            if m:
                diff = (ta.double() - tb.double()).abs()
                check(int(m.group(1)) == int((~close).sum()), f"diff {k}: count {m.group(1)}")
                check(int(m.group(2)) == ta.numel(), f"diff {k}: total {m.group(2)}")
                check(math.isclose(float(m.group(3)), diff.max().item(), rel_tol=1e-5),
                      f"diff {k}: max abs {m.group(3)} vs {diff.max().item()}")
                rel = (diff / tb.double().abs()).max().item()
                check(math.isclose(float(m.group(4)), rel, rel_tol=1e-5),
                      f"diff {k}: max rel {m.group(4)} vs {rel}")
    check(lines[-1].endswith("differences"), f"diff: last line {lines[-1]!r}")

    # tolerance: 1e-9 on fc3.bias is inside the defaults, outside exact comparison
    rc, out, _ = run("diff", path("lenet.pt"), path("lenet_tol.pt"))
    check(rc == 0, f"diff within tolerance: exit {rc} {out}")
    rc, out, _ = run("diff", "--rtol", "0", "--atol", "0", path("lenet.pt"), path("lenet_tol.pt"))
    check(rc == 1 and "values: fc3.bias  " in out, f"diff exact: exit {rc} {out}")
    # infinities are close only to the same infinity, whatever the tolerances (torch.isclose)
    for a, b in (("finite.pt", "infs.pt"), ("infs.pt", "finite.pt"), ("infs.pt", "infs_swapped.pt")):
        rc, out, _ = run("diff", path(a), path(b))
        ref = torch.allclose(torch.load(path(a))["w"], torch.load(path(b))["w"])
        check(not ref and rc == 1 and "2 of 2 elements differ" in out, f"diff {a} {b}: {rc} {out}")
    rc, out, _ = run("diff", path("infs.pt"), path("infs.pt"))
    check(rc == 0, f"diff infs self: {rc} {out}")
    # high rank, a permuted view against a contiguous copy, compared in several pieces
    ha, hb = load("high_rank.pt")["h"], load("high_rank_b.pt")["h"]
    rc, out, err = run("diff", path("high_rank.pt"), path("high_rank_b.pt"))
    want = int((ha != hb).sum())
    check(rc == 1 and f"values: h  {want} of {ha.numel()} elements differ;" in out
          and out.count("values:") == 1, f"diff high_rank: {rc} {out} {err}")
    rc, out, err = run("diff", path("high_rank.pt"), path("high_rank.pt"))
    check(rc == 0, f"diff high_rank self: {rc} {out} {err}")
    # unreadable input
    rc, _, err = run("diff", path("lenet.pt"), path("missing.pt"))
    check(rc == 3 and err.startswith("statedict: ") and "missing.pt" in err, f"diff missing: {rc} {err}")
    rc, _, err = run("diff", path("evil.pt"), path("lenet.pt"))
    check(rc == 3 and "os" in err and "system" in err, f"diff evil: {rc} {err}")


# ---- convert ---------------------------------------------------------------------------------

def test_convert():
    for name in ("lenet_legacy.pt", "checkpoint.tar", "views.pt", "dtypes.pt"):
        out = path("converted_" + os.path.splitext(name)[0] + ".pt")
        if os.path.exists(out):
            os.remove(out)
        rc, _, err = run("convert", path(name), out)
        check(rc == 0, f"convert {name}: exit {rc} {err}")
        if rc:
            continue
        rc, dout, derr = run("diff", "--rtol", "0", "--atol", "0", path(name), out)
        check(rc == 0, f"diff {name} converted: exit {rc} {dout} {derr}")
        a, b = load(name), torch.load(out)
        fa, fb = flatten(a), flatten(b)
        check(list(fa) == list(fb), f"convert {name}: keys differ after torch.load")
        for k in fa:
            x, y = fa[k], fb[k]
            if isinstance(x, torch.Tensor):
                check(isinstance(y, torch.Tensor) and x.dtype == y.dtype and x.shape == y.shape
                      and x.stride() == y.stride() and elem_bytes(x) == elem_bytes(y),
                      f"convert {name} {k}")
            else:
                same = x == y or (isinstance(x, float) and isinstance(y, float) and x != x and y != y)
                if isinstance(x, float) and isinstance(y, float) and same:
                    same = struct.pack("<d", x) == struct.pack("<d", y) or x != x  # -0.0 kept
                check(type(x) == type(y) and same, f"convert {name} {k}: {x!r} != {y!r}")
    v = torch.load(path("converted_views.pt"))
    check(v["t"].data_ptr() == v["base"].data_ptr(), "convert: views no longer share storage")
    rc, _, err = run("convert", path("evil.pt"), path("converted_evil.pt"))
    check(rc == 3 and not os.path.exists(path("converted_evil.pt")), f"convert evil: {rc} {err}")


# ---- verify ----------------------------------------------------------------------------------

def test_verify():
    rc, out, err = run("verify", path("lenet.pt"))
    check(rc == 0 and "OK" in out, f"verify lenet: {rc} {out} {err}")
    rc, out, err = run("verify", path("flipped.pt"))
    check(rc == 1 and "FAILED" in out and "CRC" in err, f"verify flipped: {rc} {out} {err}")
    rc, _, err = run("verify", path("missing.pt"))
    check(rc == 3 and "unreadable" in err, f"verify missing: {rc} {err}")
    # several files: a line each, the worst status
    rc, out, err = run("verify", path("lenet.pt"), path("flipped.pt"))
    check(rc == 1 and out.count("OK") == 1 and out.count("FAILED") == 1,
          f"verify two files: {rc} {out} {err}")
    rc, out, err = run("verify", path("flipped.pt"), path("missing.pt"), path("lenet.pt"))
    check(rc == 3 and "FAILED" in out and "unreadable" in err and "lenet.pt: OK" in out,
          f"verify three files: {rc} {out} {err}")
    # torch never checks CRCs, neither does a plain load; --verify-crc does
    rc, _, err = run("ls", path("flipped.pt"))
    check(rc == 0, f"ls flipped without CRC check: {rc} {err}")
    rc, _, err = run("ls", "--verify-crc", path("flipped.pt"))
    check(rc == 3 and "corrupt" in err and "CRC" in err, f"ls --verify-crc flipped: {rc} {err}")


# ---- scan ------------------------------------------------------------------------------------

def test_scan():
    rc, out, err = run("scan", path("evil.pt"))
    check(rc == 1, f"scan evil: exit {rc} {err}")
    check(re.search(r"^REFUSED  os\.system  \S*evil\.pt:evil/data\.pkl@\d+$", out, re.M) is not None,
          f"scan evil output: {out}")
    rc, out, err = run("scan", path("lenet.pt"))
    check(rc == 0, f"scan lenet: exit {rc} {err}")
    for g in ("collections.OrderedDict", "torch._utils._rebuild_tensor_v2", "torch.FloatStorage"):
        check(f"ALLOWED  {g}  " in out, f"scan lenet: no ALLOWED {g}: {out}")
    check("REFUSED" not in out, f"scan lenet: refused something: {out}")
    rc, out, _ = run("scan", path("lenet.pt"), path("evil.pt"))
    check(rc == 1, f"scan lenet evil: exit {rc}")
    rc, _, err = run("scan", path("missing.pt"))
    check(rc == 3, f"scan missing: exit {rc} {err}")
    # loading the evil file is refused as unsafe, naming the global, and nothing runs
    rc, _, err = run("ls", path("evil.pt"))
    check(rc == 3 and "unsafe" in err and "os" in err and "system" in err, f"ls evil: {rc} {err}")


TESTS = {"ls": test_ls, "dump": test_dump, "show": test_show, "diff": test_diff,
         "convert": test_convert, "verify": test_verify, "scan": test_scan}

if __name__ == "__main__":
    if not os.path.exists(path("not_a_checkpoint.pt")):
        here = os.path.dirname(os.path.abspath(__file__))
        rc = subprocess.run([sys.executable, os.path.join(here, "gen_cli.py"), DIR]).returncode
        if rc:
            sys.exit(rc)
    TESTS[SUBTEST]()
    print(f"cli {SUBTEST}: {len(failures)} failures")
    sys.exit(1 if failures else 0)
