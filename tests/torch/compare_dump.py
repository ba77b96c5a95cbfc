#!/usr/bin/python3
"""Compare two canonical dumps (torch_dump.py vs `statedict dump --json`) structurally.

usage: compare_dump.py [--ignore-container] EXPECTED.json ACTUAL.json

--ignore-container skips "format" and "byteorder" (a converted copy of a legacy file is a zip).

Exit 0 when they agree, 1 with the path of the first difference otherwise, 2 on bad input.
Agreement means: same format and byteorder; same tree (kinds, lengths, dict order, ordered-ness,
attrs); equal scalars (ints as JSON numbers, or decimal strings past 2^53, compared as Python
ints; floats as JSON numbers, or "nan"/"inf"/"-inf" strings, bit for bit: nan equal to nan,
-0.0 distinct from 0.0; a hex float string from an older dump is also read); equal tensor metadata (dtype, shape, stride, storage_offset, requires_grad, parameter)
and sha256; and the same sharing groups: the storage strings differ by construction (file key
vs StorageImpl pointer), so each side's storages are numbered in first-seen order and the
numbers must match. Sets are compared as multisets (their order is hash order, not file order). Also compared:
complex, device, qscheme and layout values, Counters, the conj/neg bits, quantizers, Python
attributes of tensors, and the parts of sparse and nested tensors (as tensors).
Bare storages (type "storage") compare dtype, numel, nbytes, sha256 and sharing group; a set's
"frozenset" flag must agree.
Extra keys a node may carry ("numpy") are compared only when both sides have them.
Needs no torch.
"""
import json
import math
import struct
import sys

TENSOR_FIELDS = ("dtype", "shape", "stride", "storage_offset", "requires_grad", "parameter",
                 "sha256")


class Mismatch(Exception):
    pass


def parse_float(s, path):
    if isinstance(s, (int, float)) and not isinstance(s, bool):
        return float(s)
    if not isinstance(s, str):
        raise Mismatch("%s: float value %r is neither a number nor a string" % (path, s))
    t = s.strip().lower()
    try:
        # float.fromhex also accepts "nan", "inf", "-inf", "-nan", "+inf".
        return float.fromhex(t)
    except ValueError:
        raise Mismatch("%s: cannot parse float %r" % (path, s))


def same_float(a, b):
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return struct.pack("<d", a) == struct.pack("<d", b)   # keeps -0.0 != 0.0


def key_text(k):
    """Short rendering of a dict key node for paths."""
    if isinstance(k, dict) and k.get("type") in ("str", "int"):
        return str(k.get("value"))
    if isinstance(k, dict) and k.get("type") == "float":
        return str(k.get("value"))
    return json.dumps(k, sort_keys=True)


def sort_key(n):
    """Order-independent key for set items: the node without storage strings."""
    def strip(x):
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if k != "storage"}
        if isinstance(x, list):
            return [strip(v) for v in x]
        return x
    n = strip(n)
    if n.get("type") == "float":
        try:
            n = dict(n, value=parse_float(n["value"], "").hex())
        except Mismatch:
            pass
    if n.get("type") == "int":
        try:
            n = dict(n, value=int(n["value"]))
        except (TypeError, ValueError):
            pass
    return json.dumps(n, sort_keys=True)


class Comparer:
    def __init__(self):
        self.groups = ({}, {})   # storage string -> first-seen index, per side

    def group(self, side, storage):
        if storage is None:
            return None
        g = self.groups[side]
        return g.setdefault(storage, len(g))

    def need(self, cond, path, what, a, b):
        if not cond:
            raise Mismatch("%s: %s differs: expected %s, got %s"
                           % (path, what, json.dumps(a, ensure_ascii=False)[:300],
                              json.dumps(b, ensure_ascii=False)[:300]))

    def node(self, a, b, path):
        if not isinstance(a, dict) or not isinstance(b, dict) or "type" not in b:
            raise Mismatch("%s: not a node: expected %r, got %r" % (path, a, b))
        ta, tb = a["type"], b["type"]
        self.need(ta == tb, path, "type", ta, tb)
        if ta == "none":
            return
        if ta == "int":
            va, vb = a.get("value"), b.get("value")
            try:
                va, vb = int(va), int(vb)
            except (TypeError, ValueError):
                raise Mismatch("%s: int value %r / %r is not an int" % (path, va, vb))
            self.need(va == vb and not isinstance(b.get("value"), (bool, float)), path,
                      "int value", a.get("value"), b.get("value"))
        elif ta in ("bool", "str", "dtype", "device", "qscheme", "layout"):
            self.need(a.get("value") == b.get("value"), path, ta + " value", a.get("value"),
                      b.get("value"))
        elif ta == "float":
            fa, fb = parse_float(a.get("value"), path), parse_float(b.get("value"), path)
            self.need(same_float(fa, fb), path, "float value", a.get("value"), b.get("value"))
        elif ta == "complex":
            for part in ("real", "imag"):
                fa, fb = parse_float(a.get(part), path), parse_float(b.get(part), path)
                self.need(same_float(fa, fb), path, "complex " + part, a.get(part), b.get(part))
        elif ta == "sparse":
            for f in ("layout", "size", "requires_grad", "parameter", "is_coalesced"):
                self.need(a.get(f) == b.get(f), path, "sparse " + f, a.get(f), b.get(f))
            for f in ("indices", "plain_indices", "values"):
                self.need((f in a) == (f in b), path, "presence of sparse " + f, f in a, f in b)
                if f in a:
                    self.node(a[f], b[f], path + "." + f)
            self.pairs(a.get("attrs"), b.get("attrs"), path + "@", "attrs")
        elif ta == "nested":
            for f in ("requires_grad", "parameter"):
                self.need(a.get(f) == b.get(f), path, "nested " + f, a.get(f), b.get(f))
            for f in ("buffer", "sizes", "strides", "storage_offsets"):
                self.node(a.get(f), b.get(f), path + "." + f)
            self.pairs(a.get("attrs"), b.get("attrs"), path + "@", "attrs")
        elif ta == "bytes":
            self.need(a.get("hex", "").lower() == b.get("hex", "").lower(), path, "bytes",
                      a.get("hex"), b.get("hex"))
        elif ta in ("list", "tuple"):
            self.seq(a.get("items"), b.get("items"), path)
        elif ta == "set":
            self.need(a.get("frozenset", False) == b.get("frozenset", False), path,
                      "set is a frozenset", a.get("frozenset", False), b.get("frozenset", False))
            ia, ib = a.get("items") or [], b.get("items") or []
            self.seq(sorted(ia, key=sort_key), sorted(ib, key=sort_key), path + "{set}")
        elif ta == "dict":
            self.dict(a, b, path)
        elif ta == "tensor":
            self.tensor(a, b, path)
        elif ta == "storage":
            # a bare storage: class dtype, size and content; "device" is not compared (torch
            # loads with map_location='cpu' and no longer knows the tag)
            for f in ("dtype", "numel", "nbytes", "sha256"):
                self.need(a.get(f) == b.get(f), path, "storage " + f, a.get(f), b.get(f))
            ga, gb = self.group(0, a.get("storage")), self.group(1, b.get("storage"))
            self.need(ga == gb, path, "storage sharing group (first-seen storage number)", ga, gb)
        else:
            raise Mismatch("%s: unknown node type %r" % (path, ta))
        for extra in set(a) & set(b) - {"type", "value", "items", "hex", "ordered", "attrs",
                                         "storage", "counter", "real", "imag", "quantizer",
                                         "indices", "plain_indices", "values", "buffer",
                                         "sizes", "strides", "storage_offsets", "frozenset",
                                         "numel", "nbytes", "device"} - set(
                                             TENSOR_FIELDS):
            self.need(a[extra] == b[extra], path, extra, a[extra], b[extra])

    def seq(self, ia, ib, path):
        if not isinstance(ia, list) or not isinstance(ib, list):
            raise Mismatch("%s: items missing: expected %r, got %r" % (path, ia, ib))
        for i, (x, y) in enumerate(zip(ia, ib)):
            self.node(x, y, "%s[%d]" % (path, i))
        self.need(len(ia) == len(ib), path, "length", len(ia), len(ib))

    def pairs(self, pa, pb, path, what):
        pa, pb = pa or [], pb or []
        for i, (x, y) in enumerate(zip(pa, pb)):
            if not (isinstance(y, list) and len(y) == 2):
                raise Mismatch("%s: %s entry %d is not a [key, value] pair: %r"
                               % (path, what, i, y))
            kpath = "%s<%s #%d>" % (path, what, i)
            if what == "attrs":
                self.need(x[0] == y[0], kpath, "attribute name", x[0], y[0])
            else:
                self.node(x[0], y[0], kpath)
            self.node(x[1], y[1], "%s.%s" % (path, key_text(x[0])))
        if len(pa) != len(pb):
            longer, which = (pa, "expected") if len(pa) > len(pb) else (pb, "actual")
            first = longer[min(len(pa), len(pb))][0]
            raise Mismatch("%s: %s count differs: expected %d, got %d (first extra in %s: %s)"
                           % (path, what, len(pa), len(pb), which, key_text(first)))

    def dict(self, a, b, path):
        self.need(a.get("ordered") == b.get("ordered"), path, "dict ordered", a.get("ordered"),
                  b.get("ordered"))
        self.need(a.get("counter", False) == b.get("counter", False), path, "dict is a Counter",
                  a.get("counter", False), b.get("counter", False))
        self.pairs(a.get("items"), b.get("items"), path, "items")
        self.pairs(a.get("attrs"), b.get("attrs"), path + "@", "attrs")

    def tensor(self, a, b, path):
        for f in TENSOR_FIELDS:
            self.need(f in b, path, "presence of tensor field " + f, True, False)
            self.need(a[f] == b[f], path, "tensor " + f, a[f], b[f])
        for f in ("conj", "neg"):       # torch's lazy bits, present only when set
            self.need(a.get(f, False) == b.get(f, False), path, "tensor " + f, a.get(f, False),
                      b.get(f, False))
        qa, qb = a.get("quantizer"), b.get("quantizer")
        self.need((qa is None) == (qb is None), path, "quantizer presence", qa is not None,
                  qb is not None)
        if qa is not None:
            for f in ("qscheme", "zero_point", "axis"):
                self.need(qa.get(f) == qb.get(f), path, "quantizer " + f, qa.get(f), qb.get(f))
            if "scale" in qa or "scale" in qb:
                fa, fb = parse_float(qa.get("scale"), path), parse_float(qb.get("scale"), path)
                self.need(same_float(fa, fb), path, "quantizer scale", qa.get("scale"),
                          qb.get("scale"))
            for f in ("scales", "zero_points"):
                self.need((f in qa) == (f in qb), path, "quantizer " + f, f in qa, f in qb)
                if f in qa:
                    self.node(qa[f], qb[f], path + ".quantizer." + f)
        self.pairs(a.get("attrs"), b.get("attrs"), path + "@", "attrs")
        ga, gb = self.group(0, a.get("storage")), self.group(1, b.get("storage"))
        self.need(ga == gb, path, "storage sharing group (first-seen storage number)", ga, gb)


def compare(exp, act, container=True):
    c = Comparer()
    for k in ("format", "byteorder") if container else ():
        c.need(exp.get(k) == act.get(k), "$", k, exp.get(k), act.get(k))
    if "root" not in act:
        raise Mismatch("$: actual has no root")
    c.node(exp["root"], act["root"], "$")


def main(argv):
    container = True
    if len(argv) > 1 and argv[1] == "--ignore-container":
        container = False
        argv = argv[:1] + argv[2:]
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    docs = []
    for p in argv[1:]:
        try:
            with open(p, encoding="utf-8") as f:
                docs.append(json.load(f))
        except (OSError, ValueError) as e:
            print("compare_dump: %s: %s" % (p, e))
            return 2
    try:
        compare(docs[0], docs[1], container)
    except Mismatch as e:
        print("compare_dump: MISMATCH at %s" % e)
        return 1
    print("compare_dump: same tree, values, tensors and sharing")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
