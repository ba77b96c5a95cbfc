"""Writes plain-data pickles of protocols 0-5 with CPython's own pickle module, and beside each
one a canonical text form of the object it holds, for tests/test_pickle.c to compare against
what the C pickle machine decodes.

Canonical form (the C test renders its tree the same way):
  None N   True T   False F   int i<decimal>   float f<16 hex digits of the IEEE-754 bits>
  str s<hex of UTF-8>   bytes/bytearray b<hex>
  list L[a,b]   tuple T(a,b)   set/frozenset S{sorted item texts joined by ,}
  dict D{k:v,...}  OrderedDict O{k:v,...} followed by @<dict text> when it has attributes
Usage: gen_pickles.py OUTDIR
"""
import collections
import pickle
import struct
import sys


def canon(o):
    if o is None:
        return "N"
    if o is True:
        return "T"
    if o is False:
        return "F"
    if isinstance(o, int):
        return "i%d" % o
    if isinstance(o, float):
        return "f%016x" % struct.unpack("<Q", struct.pack("<d", o))[0]
    if isinstance(o, str):
        return "s" + o.encode("utf-8", "surrogatepass").hex()
    if isinstance(o, (bytes, bytearray)):
        return "b" + bytes(o).hex()
    if isinstance(o, list):
        return "L[" + ",".join(canon(x) for x in o) + "]"
    if isinstance(o, tuple):
        return "T(" + ",".join(canon(x) for x in o) + ")"
    if isinstance(o, (set, frozenset)):
        return "S{" + ",".join(sorted(canon(x) for x in o)) + "}"
    if isinstance(o, collections.OrderedDict):
        s = "O{" + ",".join(canon(k) + ":" + canon(v) for k, v in o.items()) + "}"
        if o.__dict__:
            s += "@" + canon(dict(o.__dict__))
        return s
    if isinstance(o, dict):
        return "D{" + ",".join(canon(k) + ":" + canon(v) for k, v in o.items()) + "}"
    raise TypeError(type(o))


def cases():
    nested = {
        1: [1, 2, (3, "x")],
        "a": {"b": None, "c": True, "d": False},
        "big": 2**70,
        "neg": -(2**100),
        "ints": [0, 1, 255, 256, 65535, 65536, -1, -256, 2**31 - 1, -(2**31), 2**31,
                 2**63 - 1, -(2**63), 2**64, 10**40, -(10**40)],
        "floats": [1.5, -0.0, 1e300, -2.5e-310, float("inf"), float("-inf"), 0.1],
        "text": ["", "plain", "h\u00e9llo \u2713 \U0001F600", "back\\slash\nnew line", "q'\""],
        "set": {1, 2, 3},
        "fs": frozenset(["x", "y"]),
        "bytes": [b"", b"\x00\xffab\x80", bytearray(b"ba"), bytearray()],
        "tuples": [(), (1,), (1, 2), (1, 2, 3), (1, 2, 3, 4)],
        "keys": {True: 1, None: 2, 2.5: 3, (1, "a"): 4, b"k": 5, -7: 6},
    }
    shared = ["shared", 1]
    memo = {"strs": ["s%d" % i for i in range(400)], "again": None, "sh1": shared, "sh2": shared}
    memo["again"] = memo["strs"][::-1]
    big = {"ik": {i: str(i) for i in range(1500)},
           "sk": collections.OrderedDict(("k%d" % i, i) for i in range(2100)),
           "list": list(range(2500))}
    od = collections.OrderedDict([("w", 1), ("b", [2])])
    od._metadata = collections.OrderedDict([("", {"version": 1}), ("bn", {"version": 2})])
    return {"nested": nested, "memo": memo, "big": big, "odict": od}


def main():
    out = sys.argv[1]
    for name, obj in cases().items():
        for proto in range(6):
            with open("%s/%s_p%d.pkl" % (out, name, proto), "wb") as f:
                f.write(pickle.dumps(obj, protocol=proto))
            with open("%s/%s_p%d.txt" % (out, name, proto), "w") as f:
                f.write(canon(obj))


if __name__ == "__main__":
    main()
