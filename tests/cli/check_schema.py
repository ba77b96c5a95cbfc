#!/usr/bin/python3
"""Validates every `ls --json` and `dump --json` output of the CLI test corpus against the JSON
schema the README documents ("JSON schema of ls --json and dump --json"). Standard library only.

usage: check_schema.py STATEDICT DIR [FILE...]

Runs `statedict ls --json`, `ls --json --pretty`, `dump --json` and `dump --pretty` on every
file in DIR (and the extra FILEs), and `ls --json` on all of them at once; files the CLI refuses
(exit 3, nothing on stdout) are skipped, any other exit fails. Checks, beside each member's
presence and type: the output is ASCII, has no NaN/Infinity tokens, every int-valued member is
a JSON integer within +-2^53 or a string holding a decimal integer outside that range, every
float is a JSON number or "nan"/"inf"/"-inf", and the --pretty output parses to the same value.
Exit 0 when every output conforms, 1 otherwise (each failure printed).
"""
import json
import os
import re
import subprocess
import sys

EXACT = 2 ** 53
FORMATS = {"none", "zip", "legacy", "tar", "safetensors", "sharded"}
failures = []


def fail(where, msg):
    failures.append("%s: %s" % (where, msg))


def no_constant(name):
    raise ValueError("non-JSON constant %s" % name)


def is_int_num(v):
    """The schema's integer: a JSON integer within +-2^53, else its exact decimal text."""
    if isinstance(v, bool):
        return False
    if isinstance(v, int):
        return -EXACT <= v <= EXACT
    if isinstance(v, str) and re.fullmatch(r"-?[0-9]+", v):
        return abs(int(v)) > EXACT and str(int(v)) == v
    return False


def is_float_num(v):
    if isinstance(v, bool):
        return False
    return isinstance(v, float) or v in ("nan", "inf", "-inf")


def need(cond, where, msg):
    if not cond:
        fail(where, msg)
    return cond


def check_members(obj, where, required, optional=()):
    if not need(isinstance(obj, dict), where, "not an object: %r" % (obj,)):
        return False
    missing = [k for k in required if k not in obj]
    extra = [k for k in obj if k not in required and k not in optional]
    need(not missing, where, "missing members %s" % missing)
    need(not extra, where, "undocumented members %s" % extra)
    return not missing


def check_metadata(md, where):
    if md is None:
        return
    if not need(isinstance(md, dict), where, "metadata is neither null nor an object"):
        return
    for k, v in md.items():
        need(v is None or isinstance(v, (str, bool)) or is_int_num(v) or is_float_num(v),
             where + ".metadata." + k, "value %r is not a scalar by the schema" % (v,))


def check_dims(v, where):
    need(isinstance(v, list) and all(is_int_num(d) for d in v), where, "not a list of ints: %r" % (v,))


# ---- ls --json -----------------------------------------------------------------------------

LEAF_COMMON = ("key", "type")


def check_leaf(e, where):
    if not need(isinstance(e, dict) and "type" in e and "key" in e, where, "leaf without key/type"):
        return
    t = e["type"]
    where = "%s[%r]" % (where, e["key"])
    need(isinstance(e["key"], str), where, "key is not a string")
    if t == "tensor":
        if check_members(e, where, LEAF_COMMON + ("dtype", "shape", "stride", "storage_offset",
                                                  "nbytes", "contiguous", "storage", "shared",
                                                  "device"),
                         ("qscheme", "conj", "neg")):
            check_dims(e["shape"], where + ".shape")
            check_dims(e["stride"], where + ".stride")
            need(is_int_num(e["storage_offset"]), where, "storage_offset")
            need(is_int_num(e["nbytes"]), where, "nbytes")
            need(isinstance(e["contiguous"], bool) and isinstance(e["shared"], bool), where, "bools")
            need(e["storage"] is None or isinstance(e["storage"], str), where, "storage")
            need(isinstance(e["dtype"], str) and isinstance(e["device"], str), where, "dtype/device")
    elif t in ("sparse", "nested"):
        if check_members(e, where, LEAF_COMMON + ("dtype", "nbytes"),
                         ("shape", "layout", "components")):
            need(is_int_num(e["nbytes"]), where, "nbytes")
            if t == "sparse":
                check_dims(e.get("shape"), where + ".shape")
                need(isinstance(e.get("layout"), str), where, "layout")
            else:
                need(is_int_num(e.get("components")), where, "components")
    elif t == "storage":
        if check_members(e, where, LEAF_COMMON + ("dtype", "numel", "nbytes", "storage", "shared",
                                                  "device")):
            need(is_int_num(e["numel"]) and is_int_num(e["nbytes"]), where, "numel/nbytes")
    else:
        scalar = {"none", "bool", "int", "float", "str"}
        if check_members(e, where, LEAF_COMMON + ("repr",) + (("value",) if t in scalar else ())):
            need(isinstance(e["repr"], str), where, "repr")
            v = e.get("value")
            ok = {"none": v is None, "bool": isinstance(v, bool), "int": is_int_num(v),
                  "float": is_float_num(v), "str": isinstance(v, str)}.get(t, True)
            need(ok, where, "value %r does not follow the schema for %s" % (v, t))


def check_listing(doc, where):
    if "error" in doc:
        if check_members(doc, where, ("path", "error")):
            check_members(doc["error"], where + ".error", ("status", "message"))
        return
    if not check_members(doc, where, ("path", "format", "byteorder", "metadata", "leaves",
                                      "tensors", "tensor_bytes")):
        return
    need(doc["format"] in FORMATS, where, "format %r" % doc["format"])
    need(doc["byteorder"] in ("little", "big"), where, "byteorder")
    check_metadata(doc["metadata"], where)
    need(is_int_num(doc["tensors"]) and is_int_num(doc["tensor_bytes"]), where, "totals")
    if need(isinstance(doc["leaves"], list), where, "leaves is not a list"):
        for e in doc["leaves"]:
            check_leaf(e, where + ".leaves")


# ---- dump --json ---------------------------------------------------------------------------

def check_node(n, where, depth=0):
    if not need(isinstance(n, dict) and isinstance(n.get("type"), str), where, "not a node"):
        return
    t = n["type"]
    if t == "none":
        check_members(n, where, ("type",))
    elif t == "bool":
        if check_members(n, where, ("type", "value")):
            need(isinstance(n["value"], bool), where, "bool value")
    elif t == "int":
        if check_members(n, where, ("type", "value")):
            need(is_int_num(n["value"]), where, "int value %r breaks the number rule" % (n["value"],))
    elif t == "float":
        if check_members(n, where, ("type", "value")):
            need(is_float_num(n["value"]), where, "float value %r" % (n["value"],))
    elif t == "complex":
        if check_members(n, where, ("type", "real", "imag")):
            need(is_float_num(n["real"]) and is_float_num(n["imag"]), where, "complex parts")
    elif t in ("str", "dtype", "device", "qscheme", "layout"):
        if check_members(n, where, ("type", "value")):
            need(isinstance(n["value"], str), where, "%s value" % t)
    elif t == "bytes":
        if check_members(n, where, ("type", "hex")):
            need(re.fullmatch(r"([0-9a-f]{2})*", n["hex"]) is not None, where, "hex")
    elif t in ("list", "tuple", "set"):
        if check_members(n, where, ("type", "items"), ("frozenset",)):
            for i, x in enumerate(n["items"]):
                check_node(x, "%s[%d]" % (where, i), depth + 1)
    elif t == "dict":
        if check_members(n, where, ("type", "ordered", "items"), ("counter", "attrs")):
            need(isinstance(n["ordered"], bool), where, "ordered")
            for i, kv in enumerate(n["items"]):
                if need(isinstance(kv, list) and len(kv) == 2, where, "item %d not a pair" % i):
                    check_node(kv[0], "%s<key %d>" % (where, i), depth + 1)
                    check_node(kv[1], "%s[%d]" % (where, i), depth + 1)
            check_attrs(n.get("attrs"), where, depth)
    elif t == "tensor":
        if check_members(n, where, ("type", "dtype", "shape", "stride", "storage_offset",
                                    "requires_grad", "parameter", "storage", "device", "sha256"),
                         ("conj", "neg", "quantizer", "attrs")):
            check_dims(n["shape"], where + ".shape")
            check_dims(n["stride"], where + ".stride")
            need(is_int_num(n["storage_offset"]), where, "storage_offset")
            need(n["sha256"] is None or re.fullmatch(r"[0-9a-f]{64}", n["sha256"]) is not None,
                 where, "sha256")
            q = n.get("quantizer")
            if q is not None and check_members(q, where + ".quantizer",
                                               ("qscheme",), ("scale", "zero_point", "scales",
                                                              "zero_points", "axis")):
                if "scale" in q:
                    need(is_float_num(q["scale"]) and is_int_num(q.get("zero_point")), where,
                         "quantizer scale/zero_point")
                else:
                    need(is_int_num(q.get("axis")), where, "quantizer axis")
                    check_node(q.get("scales"), where + ".scales", depth + 1)
                    check_node(q.get("zero_points"), where + ".zero_points", depth + 1)
            check_attrs(n.get("attrs"), where, depth)
    elif t == "storage":
        if check_members(n, where, ("type", "dtype", "numel", "nbytes", "device", "storage",
                                    "sha256")):
            need(is_int_num(n["numel"]) and is_int_num(n["nbytes"]), where, "numel/nbytes")
    elif t == "sparse":
        if check_members(n, where, ("type", "requires_grad", "parameter", "layout", "size",
                                    "indices", "values"),
                         ("is_coalesced", "plain_indices", "attrs")):
            check_dims(n["size"], where + ".size")
            for f in ("indices", "plain_indices", "values"):
                if f in n:
                    check_node(n[f], where + "." + f, depth + 1)
    elif t == "nested":
        if check_members(n, where, ("type", "requires_grad", "parameter", "buffer", "sizes",
                                    "strides", "storage_offsets"), ("attrs",)):
            for f in ("buffer", "sizes", "strides", "storage_offsets"):
                check_node(n[f], where + "." + f, depth + 1)
    elif t == "object":  # --inert
        if check_members(n, where, ("type", "module", "name", "call"),
                         ("callee", "args", "kwargs", "state", "items")):
            need(isinstance(n["module"], str) and isinstance(n["name"], str), where, "class names")
            need(n["call"] in ("class", "reduce", "newobj"), where, "call %r" % (n["call"],))
            need(("args" in n) == (n["call"] != "class"), where, "args exactly when called")
            for f in ("callee", "args", "kwargs", "state", "items"):
                if f in n:
                    check_node(n[f], where + "." + f, depth + 1)
    else:
        fail(where, "unknown node type %r" % t)


def check_attrs(attrs, where, depth):
    if attrs is None:
        return
    for i, kv in enumerate(attrs):
        if need(isinstance(kv, list) and len(kv) == 2 and isinstance(kv[0], str), where,
                "attr %d is not a [name, NODE] pair" % i):
            check_node(kv[1], "%s@%s" % (where, kv[0]), depth + 1)


def check_dump(doc, where):
    if check_members(doc, where, ("format", "byteorder", "metadata", "root")):
        need(doc["format"] in FORMATS, where, "format %r" % doc["format"])
        need(doc["byteorder"] in ("little", "big"), where, "byteorder")
        check_metadata(doc["metadata"], where)
        check_node(doc["root"], where + ".root")


# ---- driver --------------------------------------------------------------------------------

def run(bin_, *args):
    p = subprocess.run([bin_] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=600)
    return p.returncode, p.stdout, p.stderr


def parse(out, where):
    try:
        text = out.decode("ascii")
    except UnicodeDecodeError:
        fail(where, "output is not ASCII")
        return None
    try:
        return json.loads(text, parse_constant=no_constant)
    except ValueError as e:
        fail(where, "not JSON: %s" % e)
        return None


def selftest():
    """The validator itself must refuse each way of breaking the schema."""
    good = {"format": "zip", "byteorder": "little", "metadata": None, "root": {
        "type": "dict", "ordered": True, "items": [
            [{"type": "str", "value": "a"}, {"type": "int", "value": 2 ** 53}],
            [{"type": "str", "value": "b"}, {"type": "int", "value": str(2 ** 53 + 1)}],
            [{"type": "str", "value": "c"}, {"type": "float", "value": 0.1}],
            [{"type": "str", "value": "d"}, {"type": "float", "value": "nan"}]]}}
    bad = [("int number past 2^53", ("a", {"type": "int", "value": 2 ** 53 + 1})),
           ("int text within 2^53", ("a", {"type": "int", "value": "12"})),
           ("int as float", ("a", {"type": "int", "value": 12.0})),
           ("float as text", ("c", {"type": "float", "value": "0.1"})),
           ("float as hex text", ("c", {"type": "float", "value": "0x1.999999999999ap-4"})),
           ("undocumented member", ("c", {"type": "float", "value": 0.1, "x": 1})),
           ("missing member", ("c", {"type": "float"}))]
    n = len(failures)
    check_dump(good, "selftest good")
    if len(failures) != n:
        return False
    for what, (key, node) in bad:
        doc = json.loads(json.dumps(good))
        for kv in doc["root"]["items"]:
            if kv[0]["value"] == key:
                kv[1] = node
        n = len(failures)
        check_dump(doc, "selftest " + what)
        if len(failures) == n:
            print("FAIL: the validator accepted %s" % what)
            return False
        del failures[n:]
    try:
        json.loads('{"v": NaN}', parse_constant=no_constant)
        print("FAIL: the validator accepted a NaN token")
        return False
    except ValueError:
        pass
    return True


def main(argv):
    if not selftest():
        return 1
    if len(argv) < 3:
        print(__doc__)
        return 2
    bin_, d = argv[1], argv[2]
    files = sorted(os.path.join(d, n) for n in os.listdir(d))
    files = [f for f in files if os.path.isfile(f) or os.path.isdir(f)] + argv[3:]
    checked = 0
    listed = []
    for f in files:
        for cmd, checker in (("ls", check_listing), ("dump", check_dump)):
            outs = []
            for extra in (["--json"], ["--json", "--pretty"]):
                where = "%s %s %s" % (cmd, " ".join(extra), f)
                rc, out, err = run(bin_, cmd, *extra, f)
                if rc == 3 and not out:
                    break  # refused (corrupt, unsafe, over a limit): nothing to validate
                if not need(rc == 0, where, "exit %d: %s" % (rc, err[-300:])):
                    break
                doc = parse(out, where)
                if doc is not None:
                    checker(doc, where)
                    outs.append(doc)
                    checked += 1
            if len(outs) == 2:
                need(outs[0] == outs[1], "%s %s" % (cmd, f), "--pretty parses to another value")
            if cmd == "ls" and outs:
                listed.append(f)
    # several files in one ls: {"files": [LISTING...]}, each entry the single file's listing
    if len(listed) >= 2:
        rc, out, err = run(bin_, "ls", "--json", *listed)
        doc = parse(out, "ls --json (all)")
        if need(rc == 0 and isinstance(doc, dict), "ls --json (all)", "exit %d" % rc):
            if check_members(doc, "ls --json (all)", ("files",)):
                need(len(doc["files"]) == len(listed), "ls --json (all)", "entry count")
                for i, e in enumerate(doc["files"]):
                    check_listing(e, "ls --json (all).files[%d]" % i)
                    checked += 1
    for f in failures[:50]:
        print("FAIL:", f)
    print("%d outputs validated, %d failure(s)" % (checked, len(failures)))
    if checked == 0:
        print("FAIL: nothing was validated")
        return 1
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
