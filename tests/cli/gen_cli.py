#!/usr/bin/python3
"""Write the small checkpoints the CLI tests read, with real PyTorch (Debian's python3-torch).

usage: gen_cli.py OUTDIR

Everything is seeded. Besides torch.save output, it writes two hand-made zip files the CLI must
refuse or flag: evil.pt (a data.pkl that calls os.system) and a copy of lenet.pt with one payload
byte flipped (flipped.pt). Exits 77 when torch cannot be imported.
"""
import collections
import os
import struct
import sys
import zipfile

try:
    import torch
    import torch.nn as nn
except ImportError as e:  # the test runner treats 77 as "skipped"
    print(f"skip: /usr/bin/python3 cannot import torch ({e})")
    sys.exit(77)


sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "examples"))
from recipe_net import TheModelClass as LeNet  # noqa: E402


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    model = LeNet()
    sd = model.state_dict()
    torch.save(sd, os.path.join(out, "lenet.pt"))
    torch.save(sd, os.path.join(out, "lenet_legacy.pt"), _use_new_zipfile_serialization=False)

    # diff targets: one tensor nudged by 1e-3 (values differ), one within tolerance (1e-9),
    # one key removed, one key added, one dtype changed, one shape changed
    b = {k: v.clone() for k, v in sd.items()}
    b["conv1.weight"][0, 0, 0, 0] += 1e-3
    b["fc3.bias"] = b["fc3.bias"] + 1e-9
    del b["fc2.bias"]
    b["extra.weight"] = torch.ones(2)
    b["conv2.bias"] = b["conv2.bias"].double()
    b["fc1.bias"] = torch.zeros(7)
    torch.save(b, os.path.join(out, "lenet_b.pt"))
    tol = {k: v.clone() for k, v in sd.items()}
    tol["fc3.bias"] = tol["fc3.bias"] + 1e-9
    torch.save(tol, os.path.join(out, "lenet_tol.pt"))
    inf = float("inf")
    torch.save({"param": torch.nn.Parameter(torch.tensor([1.5, 2.0]))}, os.path.join(out, "param.pt"))
    torch.save({"w": torch.tensor([1.0, 2.0])}, os.path.join(out, "finite.pt"))
    torch.save({"w": torch.tensor([inf, -inf])}, os.path.join(out, "infs.pt"))
    torch.save({"w": torch.tensor([-inf, inf])}, os.path.join(out, "infs_swapped.pt"))

    # the tutorial's general checkpoint: model, SGD with momentum after one step, epoch, loss
    opt = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9)
    x = torch.randn(2, 3, 32, 32)
    import torch.nn.functional as F
    y = model.fc3(F.relu(model.fc2(F.relu(model.fc1(
        model.pool(F.relu(model.conv2(model.pool(F.relu(model.conv1(x)))))).view(-1, 400))))))
    y.sum().backward()
    opt.step()
    torch.save({"epoch": 5, "model_state_dict": model.state_dict(),
                "optimizer_state_dict": opt.state_dict(), "loss": 0.4},
               os.path.join(out, "checkpoint.tar"))

    # layouts: a transposed view and a slice sharing one storage, a 0-dim, an empty tensor
    base = torch.arange(12, dtype=torch.float32)
    torch.save({"base": base, "t": base.view(3, 4).t(), "slice": base[2:8].view(2, 3),
                "scalar": torch.tensor(3.5, dtype=torch.float64),
                "empty": torch.zeros(0, 3)}, os.path.join(out, "views.pt"))

    # dtypes and plain values
    torch.save({"f16": torch.tensor([1.5, -2.25, 65504.0], dtype=torch.float16),
                "bf16": torch.tensor([1.0, 0.1], dtype=torch.bfloat16),
                "i8": torch.tensor([-128, 0, 127], dtype=torch.int8),
                "u8": torch.tensor([0, 255], dtype=torch.uint8),
                "b": torch.tensor([True, False, True]),
                "c64": torch.tensor([1 + 2j, -0.5j], dtype=torch.complex64),
                "i64": torch.arange(-3, 3).reshape(2, 3),
                "big": torch.arange(2000, dtype=torch.float32).reshape(40, 50) / 7,
                "mixed": torch.tensor([[-1.25, float("nan")], [float("inf"), 0.5]]),
                "cube": torch.arange(24, dtype=torch.float64).reshape(2, 3, 4) / 3,
                "long4": torch.arange(1296).reshape(6, 6, 6, 6),
                "values": {"none": None, "t": True, "big_int": 2 ** 70, "neg": -12,
                           "f": 0.1, "s": "héllo", "raw": b"\x00\xff",
                           "tup": (1, 2.5, "x"), "lst": [], 7: "int key",
                           1.5: "float key", (1, 2): "tuple key", 2 ** 65: "big key",
                           "dt": torch.float16},
                # the JSON schema's exactness boundaries: ints past +-2^53 and floats that no
                # short decimal holds, each as ls --json and dump --json must write them
                "exact": {"p53": 2 ** 53, "p53_1": 2 ** 53 + 1, "m53": -2 ** 53,
                          "m53_1": -2 ** 53 - 1, "p63": 2 ** 63, "m63_1": -2 ** 63 - 1,
                          "huge": 10 ** 40 + 7, "third": 1 / 3, "sum": 0.1 + 0.2,
                          "tiny": 5e-324, "max": 1.7976931348623157e308, "negzero": -0.0,
                          "e16": 1e16, "small": 1e-05, "nan": float("nan"),
                          "inf": float("inf"), "ninf": float("-inf")}},
               os.path.join(out, "dtypes.pt"))

    # high rank (torch has no limit): shown as torch prints it; h is a permuted view of 1.1M
    # elements, so diff walks it in several pieces; high_rank_b.pt holds h contiguous with
    # three elements changed
    g = torch.Generator().manual_seed(3)
    hbase = torch.randn([1] * 10 + [1100] + [1] * 20 + [1000] + [1] * 8, generator=g)
    h = hbase.transpose(10, 31)
    r20 = torch.randn([2, 1, 3, 1, 1, 2] + [1] * 13 + [2], generator=g).permute(*reversed(range(20)))
    torch.save({"h": h, "r20": r20, "r100": torch.zeros([1] * 100),
                "summ": torch.arange(1600.).reshape([1] * 20 + [40, 1, 40]) / 3},
               os.path.join(out, "high_rank.pt"))
    hb = h.contiguous()
    hb.view(-1)[[0, 123457, 1099999]] += 1.0
    torch.save({"h": hb, "r20": r20, "r100": torch.zeros([1] * 100),
                "summ": torch.arange(1600.).reshape([1] * 20 + [40, 1, 40]) / 3},
               os.path.join(out, "high_rank_b.pt"))

    # flipped.pt: lenet.pt with one byte of the first tensor payload inverted
    data = bytearray(open(os.path.join(out, "lenet.pt"), "rb").read())
    with zipfile.ZipFile(os.path.join(out, "lenet.pt")) as z:
        info = next(i for i in z.infolist() if i.filename.endswith("/data/0"))
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26:info.header_offset + 30])
    payload = info.header_offset + 30 + name_len + extra_len
    data[payload + 5] ^= 0xFF
    open(os.path.join(out, "flipped.pt"), "wb").write(bytes(data))

    # evil.pt: data.pkl calls os.system("true") through GLOBAL + REDUCE; never loaded by Python
    pkl = (b"\x80\x02" + b"cos\nsystem\n" + b"X\x04\x00\x00\x00true" + b"\x85" + b"R" + b".")
    with zipfile.ZipFile(os.path.join(out, "evil.pt"), "w") as z:
        z.writestr("evil/data.pkl", pkl)
        z.writestr("evil/version", "3\n")

    # exotic.pt: every node form the JSON schema names (check_schema.py validates them)
    x = torch.arange(6, dtype=torch.float32)
    qa = torch.quantize_per_tensor(x, 0.1, 3, torch.quint8)
    qc = torch.quantize_per_channel(x.reshape(2, 3), torch.tensor([0.5, 0.25], dtype=torch.float64),
                                    torch.tensor([1, 2]), 0, torch.qint8)
    torch.save({"sparse": torch.tensor([[0., 2.], [3., 0.]]).to_sparse(),
                "csr": torch.tensor([[0., 2.], [3., 0.]]).to_sparse_csr(),
                "qt": qa, "qc": qc, "cplx": torch.tensor([1 + 2j, -0.5j]), "c": 1.5 - 2j,
                "storage": x.storage(), "dev": torch.device("cpu"), "dt": torch.int8,
                "param": torch.nn.Parameter(torch.ones(2)), "set": {1, 2}, "fs": frozenset([3]),
                "counter": collections.Counter("aab"), "conj": torch.tensor([1 + 1j]).conj(),
                "big": 2 ** 100, "neg_nan": -float("nan"), "none": None, "b": b"\x01"},
               os.path.join(out, "exotic.pt"))

    # not_a_checkpoint.pt: text
    open(os.path.join(out, "not_a_checkpoint.pt"), "w").write("hello, not a checkpoint\n")


if __name__ == "__main__":
    main()
