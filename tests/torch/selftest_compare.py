#!/usr/bin/python3
"""Self-test of compare_dump.py: it must accept equal dumps spelled differently (a float as a
JSON number or as an older dump's hex text, other storage strings, set order) and reject each kind of real difference.
Needs no torch: the dumps are written out here by hand.

usage: selftest_compare.py
"""
import copy
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare_dump  # noqa: E402


def t(storage, sha="aa", offset=0, shape=(2,), stride=(1,), dtype="float32", rg=False, p=False):
    return {"type": "tensor", "dtype": dtype, "shape": list(shape), "stride": list(stride),
            "storage_offset": offset, "requires_grad": rg, "parameter": p, "storage": storage,
            "sha256": sha}


def s(v):
    return {"type": "str", "value": v}


def f(v):
    return {"type": "float", "value": v}


def i(v):
    return {"type": "int", "value": v}


def doc(root):
    return {"format": "zip", "byteorder": "little", "root": root}


# The JSON schema's spelling, as torch_dump.py writes it: numbers where exact, strings else.
BASE = doc({"type": "dict", "ordered": True, "items": [
    [s("a"), t("torch:1", "11")],
    [s("b"), t("torch:1", "22", offset=1)],
    [s("c"), t("torch:2", "33")],
    [s("floats"), {"type": "list", "items": [f(0.1), f(0.0), f(-0.0), f("nan"), f("-inf"),
                                             f(5e-324)]}],
    [i(5), {"type": "set", "items": [i(1), i(2), s("x")]}],
    [s("big"), i("1208925819614629174706176")],
    [s("by"), {"type": "bytes", "hex": "00ff"}],
    [s("od"), {"type": "dict", "ordered": True, "items": [],
               "attrs": [["_metadata", {"type": "none"}]]}],
]})


def expect(ok, exp, act, what):
    try:
        compare_dump.compare(exp, act)
        got = True
        msg = ""
    except compare_dump.Mismatch as e:
        got = False
        msg = str(e)
    if got != ok:
        print("FAIL: %s: expected %s, compare said %s %s"
              % (what, "equal" if ok else "different", "equal" if got else "different", msg))
        return 1
    print("ok: %s%s" % (what, (" -> " + msg) if msg else ""))
    return 0


def main():
    fails = 0
    fails += expect(True, BASE, copy.deepcopy(BASE), "identical")

    # hex spellings (older dumps), other storage names, set reordered, upper-case hex: still equal.
    c = copy.deepcopy(BASE)
    items = c["root"]["items"]
    items[0][1]["storage"] = "7"
    items[1][1]["storage"] = "7"
    items[2][1]["storage"] = "0"
    items[3][1]["items"] = [f("0x1.999999999999ap-4"), f("0x0p+0"), f("-0x0p+0"), f("-nan"),
                            f("-inf"), f("0x0.0000000000001p-1022")]
    items[4][1]["items"].reverse()
    items[6][1]["hex"] = "00FF"
    fails += expect(True, BASE, c, "C spellings, renamed storages, reordered set")

    def mutate(fn, what):
        m = copy.deepcopy(BASE)
        fn(m["root"]["items"])
        return expect(False, BASE, m, what)

    fails += mutate(lambda it: it[0][1].update(sha256="12"), "sha256")
    fails += mutate(lambda it: it[1][1].update(storage_offset=0), "storage_offset")
    fails += mutate(lambda it: it[0][1].update(stride=[2]), "stride")
    fails += mutate(lambda it: it[0][1].update(shape=[1, 2]), "shape")
    fails += mutate(lambda it: it[0][1].update(dtype="bfloat16"), "dtype")
    fails += mutate(lambda it: it[0][1].update(requires_grad=True), "requires_grad")
    fails += mutate(lambda it: it[0][1].update(parameter=True), "parameter")
    fails += mutate(lambda it: it[1][1].update(storage="torch:9"), "sharing split")
    fails += mutate(lambda it: it[2][1].update(storage="torch:1"), "sharing merged")
    fails += mutate(lambda it: it[3][1]["items"].__setitem__(1, f(-0.0)), "-0.0 vs 0.0")
    fails += mutate(lambda it: it[3][1]["items"].__setitem__(3, f("inf")), "nan vs inf")
    fails += mutate(lambda it: it[3][1]["items"].__setitem__(0, f(0.10000000000000002)),
                    "last ulp")
    fails += mutate(lambda it: it[4][1]["items"].__setitem__(0, i(1.0)), "int written as float")
    fails += mutate(lambda it: it[3][1]["items"].pop(), "list length")
    fails += mutate(lambda it: it[3][1].update(type="tuple"), "list vs tuple")
    fails += mutate(lambda it: it[4].__setitem__(0, s("5")), "int key vs str key")
    fails += mutate(lambda it: it[4][1]["items"].__setitem__(0, i(9)), "set member")
    fails += mutate(lambda it: it[5].__setitem__(1, i("1208925819614629174706177")), "big int")
    fails += mutate(lambda it: it[6][1].update(hex="0000"), "bytes")
    fails += mutate(lambda it: it.reverse(), "dict order")
    fails += mutate(lambda it: it.pop(), "missing key")
    fails += mutate(lambda it: it[7][1].pop("attrs"), "missing attrs")
    fails += mutate(lambda it: it[7][1].update(ordered=False), "ordered flag")
    fmt = copy.deepcopy(BASE)
    fmt["format"] = "legacy"
    fails += expect(False, BASE, fmt, "format")
    print("%d failure(s)" % fails)
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
