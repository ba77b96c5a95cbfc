#!/usr/bin/python3
"""Generate ground-truth checkpoints with real PyTorch (Debian's python3-torch 1.13).

usage: gen_fixtures.py OUTDIR          write every fixture the running torch can write into OUTDIR
       gen_fixtures.py --list [GEN]    print the fixture file names for torch generation GEN
                                       ("1.13", "2.6", "2.14"; default 1.13; needs no torch)
       gen_fixtures.py --big OUTDIR    write only big_zip64.pt (> 4 GiB, see big_zip64())

Everything is seeded, so two runs write the same tensors. The files are only ever read back by
our own tests (torch_dump.py, the statedict CLI); each one exercises one part of the format that
the C reader must get right (comments say which). Run it with /usr/bin/python3: the python3 first
on PATH may lack torch.
"""
import collections
import math
import os
import shutil
import sys

# Fixture name -> builder. Filled by @fixture below; the order is the order of --list.
FIXTURES = collections.OrderedDict()
# Fixture name -> the oldest torch (major, minor) that can write it; absent means any.
SINCE = {}


def fixture(name, since=None):
    """Registers a builder; since=(2, 1) marks content that older torch cannot save."""
    def register(fn):
        FIXTURES[name] = fn
        if since:
            SINCE[name] = since
        return fn
    return register


def generation(text):
    """(major, minor) of a torch version or generation string: "2.14.0+debian" -> (2, 14)."""
    parts = text.split("+")[0].split(".")
    return int(parts[0]), int(parts[1])


def names_for(gen):
    return [n for n in FIXTURES if gen >= SINCE.get(n, (0, 0))]


# ---- models -------------------------------------------------------------------------------------

def lenet_class():
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "examples"))
    from recipe_net import TheModelClass
    return TheModelClass


def lenet():
    import torch
    torch.manual_seed(0)
    return lenet_class()()


def train_steps(model, opt, steps=2, seed=1):
    """A couple of real optimisation steps on random data so optimizer state is non-trivial."""
    import torch
    import torch.nn.functional as F
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(4, 3, 32, 32, generator=g)
        y = torch.randint(0, 10, (4,), generator=g)
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    return loss.item()


def layers_model():
    """BatchNorm1d/2d (running stats + num_batches_tracked), Dropout (no state), Embedding."""
    import torch
    import torch.nn as nn

    class Layers(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(20, 8, padding_idx=0)
            self.conv = nn.Conv2d(1, 4, 3)
            self.bn2 = nn.BatchNorm2d(4)
            self.drop = nn.Dropout(0.25)
            self.fc = nn.Linear(8, 6)
            self.bn1 = nn.BatchNorm1d(6)

        def forward(self, idx, img):
            a = self.bn1(self.fc(self.drop(self.emb(idx))))
            b = self.bn2(self.conv(img))
            return a.sum() + b.sum()

    torch.manual_seed(2)
    m = Layers()
    m.train()
    # Two forward passes in train mode move the running statistics away from 0/1.
    for _ in range(2):
        m(torch.randint(0, 20, (5,)), torch.randn(2, 1, 6, 6))
    return m


# ---- fixtures -----------------------------------------------------------------------------------

@fixture("lenet.pt")
def f_lenet():
    return lenet().state_dict()


@fixture("general_checkpoint.tar")
def f_general_checkpoint():
    import torch.optim as optim
    model = lenet()
    opt = optim.SGD(model.parameters(), lr=0.001, momentum=0.9)
    loss = train_steps(model, opt)
    return {"epoch": 2, "model_state_dict": model.state_dict(),
            "optimizer_state_dict": opt.state_dict(), "loss": loss}


@fixture("adam.pt")
def f_adam():
    import torch.optim as optim
    model = lenet()
    adam = optim.Adam(model.parameters(), lr=1e-3)
    train_steps(model, adam)
    model2 = lenet()
    ams = optim.Adam(model2.parameters(), lr=1e-3, weight_decay=1e-4, amsgrad=True)
    train_steps(model2, ams, seed=3)
    return {"model_state_dict": model.state_dict(), "adam": adam.state_dict(),
            "adam_amsgrad": ams.state_dict()}


@fixture("gan.pt")
def f_gan():
    import torch
    import torch.nn as nn
    import torch.optim as optim
    torch.manual_seed(4)
    netG = nn.Sequential(nn.ConvTranspose2d(16, 8, 4, 1, 0, bias=False), nn.BatchNorm2d(8),
                         nn.ReLU(True), nn.ConvTranspose2d(8, 3, 4, 2, 1, bias=False), nn.Tanh())
    netD = nn.Sequential(nn.Conv2d(3, 8, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),
                         nn.Conv2d(8, 1, 4, 1, 0, bias=False), nn.Sigmoid())
    optG = optim.Adam(netG.parameters(), lr=2e-4, betas=(0.5, 0.999))
    optD = optim.Adam(netD.parameters(), lr=2e-4, betas=(0.5, 0.999))
    for _ in range(2):
        fake = netG(torch.randn(2, 16, 1, 1))
        optD.zero_grad()
        nn.functional.binary_cross_entropy(netD(fake.detach()).view(-1), torch.zeros(2)).backward()
        optD.step()
        optG.zero_grad()
        nn.functional.binary_cross_entropy(netD(fake).view(-1), torch.ones(2)).backward()
        optG.step()
    return {"modelA_state_dict": netG.state_dict(), "modelB_state_dict": netD.state_dict(),
            "optimizerA_state_dict": optG.state_dict(),
            "optimizerB_state_dict": optD.state_dict()}


@fixture("resnet18.pt")
def f_resnet18():
    import torch
    import torchvision
    torch.manual_seed(5)
    return torchvision.models.resnet18(weights=None).state_dict()


@fixture("layers.pt")
def f_layers():
    return layers_model().state_dict()


def all_dtypes():
    """One tensor per dtype torch 1.13 can save, with values that stress each encoding."""
    import torch
    g = torch.Generator().manual_seed(6)
    r = torch.randn(3, 5, generator=g, dtype=torch.float64)
    special = torch.tensor([0.0, -0.0, 1.0, -1.5, math.inf, -math.inf, math.nan, 1e-300, 65504.0,
                            1e38, 5e-324, 3.0e-8])
    out = collections.OrderedDict()
    out["float64"] = torch.cat([r.flatten(), special.double()])
    out["float32"] = torch.cat([r.flatten().float(), special.float()])
    out["float16"] = torch.cat([r.flatten().half(), special.half()])
    out["bfloat16"] = torch.cat([r.flatten().bfloat16(), special.bfloat16()])
    out["complex64"] = torch.complex(r[0].float(), r[1].float())
    out["complex128"] = torch.complex(r[1], r[2])
    out["int8"] = torch.tensor([-128, -1, 0, 1, 127], dtype=torch.int8)
    out["int16"] = torch.tensor([-32768, -2, 0, 3, 32767], dtype=torch.int16)
    out["int32"] = torch.tensor([-2**31, -5, 0, 7, 2**31 - 1], dtype=torch.int32)
    out["int64"] = torch.tensor([-2**63, -9, 0, 11, 2**63 - 1], dtype=torch.int64)
    out["uint8"] = torch.tensor([0, 1, 128, 254, 255], dtype=torch.uint8)
    out["bool"] = torch.tensor([[True, False, True], [False, False, True]])
    out["float32_2d"] = torch.randn(4, 6, generator=g)
    return out


@fixture("dtypes.pt")
def f_dtypes():
    return all_dtypes()


def views_and_sharing():
    """Views keep their base's whole storage; several tensors can reference one storage."""
    import torch
    import torch.nn as nn
    torch.manual_seed(7)                     # nn.Linear init below
    g = torch.Generator().manual_seed(7)
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    flat = torch.arange(12, dtype=torch.float64)
    lin = nn.Linear(4, 4)
    out = collections.OrderedDict()
    out["base"] = base
    out["row_slice"] = base[1:3]                 # storage_offset 6, same storage as base
    out["col_slice"] = base[:, 2:5]              # offset 2, strides (6, 1), non-contiguous
    out["step_slice"] = base[::2, ::3]           # strides (12, 3)
    out["flat"] = flat
    out["view_t"] = flat.view(3, 4).t()          # shape (4, 3), strides (1, 4)
    out["fortran"] = torch.randn(3, 5, generator=g).t()   # Fortran order, own storage
    out["expanded"] = torch.randn(1, 3, generator=g).expand(4, 3)   # stride 0 on dim 0
    out["expanded_scalar"] = torch.tensor(2.5).expand(2, 3)          # all strides 0
    out["scalar"] = torch.tensor(3.25)           # 0-dim
    out["scalar_int"] = torch.tensor(7)
    out["empty"] = torch.empty(0)
    out["empty_2d"] = torch.zeros(3, 0, dtype=torch.int32)
    out["tied_a"] = lin.weight                   # Parameter, requires_grad, tied with tied_b
    out["tied_b"] = lin.weight
    out["param_nograd"] = nn.Parameter(torch.randn(2, 2, generator=g), requires_grad=False)
    out["requires_grad"] = torch.randn(3, generator=g).requires_grad_()
    out["bias_param"] = lin.bias
    out["narrow_of_view"] = base.t()[2:4, 1:3]   # view of a view: offset into the base storage
    out["list_of_views"] = [base[0], base[3], flat[5:]]
    # A model with tied weights: its state_dict holds two detached tensors (distinct objects)
    # over one storage, as language models tying embedding and output weights do.
    tied = nn.Sequential(nn.Embedding(5, 3), nn.Linear(3, 5, bias=False))
    tied[1].weight = tied[0].weight
    out["tied_model"] = tied.state_dict()
    return out


@fixture("views.pt")
def f_views():
    return views_and_sharing()


def non_tensor_values():
    import torch
    od = collections.OrderedDict([("b", 2), ("a", 1)])
    od._metadata = collections.OrderedDict([("", {"version": 1})])
    od2 = collections.OrderedDict([(1, "one"), (0, "zero")])
    od2.note = "attr"
    return collections.OrderedDict([
        ("none", None), ("true", True), ("false", False),
        ("ints", [0, 1, -1, 255, 256, 65535, 65536, -2**31, 2**31 - 1, 2**31, 2**63 - 1, 2**63,
                  -2**63, -2**63 - 1, 2**64, 2**80, -2**70, 3**100]),
        ("floats", [0.0, -0.0, 1.0, 0.1, -2.5, 1e308, 5e-324, 2.2250738585072014e-308,
                    math.pi, math.nan, math.inf, -math.inf]),
        ("str", "hello"), ("unicode", "h\u00e9llo w\u00f6rld \u4e16\u754c \U0001f600 \"q\" \\"),
        ("empty_str", ""), ("bytes", b"\x00\x01\xfe\xffabc"), ("empty_bytes", b""),
        ("bytearray", bytearray(b"\x10\x20")),
        ("list", [1, "two", 3.0, None, [4, [5]]]), ("empty_list", []),
        ("tuple", (1, "a", (2, 3))), ("empty_tuple", ()), ("tuple4", (1, 2, 3, 4)),
        ("set", {1, 2, 3}), ("frozenset", frozenset({"x"})), ("empty_set", set()),
        ("nested", {"a": {1: {"b": [1, 2]}, 2: {}}, "c": {-5: None, 10**20: "big"}}),
        ("float_key", {1.5: "x", True: "t"}), ("tuple_key", {(1, 2): "tk"}),
        ("ordered", od), ("ordered_int_keys", od2),
        ("tensor_in_list", [torch.tensor([1, 2, 3])]),
        ("shared_list", [od, od]),               # same object twice -> BINGET
    ])


@fixture("values.pt")
def f_values():
    return non_tensor_values()


def high_rank():
    """Tensors of many dimensions (torch has no rank limit; numpy stops at 32): ranks 20, 40,
    100 and 1000, with sizes above 1 spread among size-1 dimensions, permuted (non-contiguous)
    views sharing their base's storage, an expanded one (stride 0), a sliced one (offset and
    steps), an empty one, a Parameter and a 0-dim tensor beside them."""
    import torch
    import torch.nn as nn
    g = torch.Generator().manual_seed(9)

    def sizes(rank, **big):
        s = [1] * rank
        for k, n in big.items():
            s[int(k[1:])] = n
        return s

    out = collections.OrderedDict()
    out["rank20"] = torch.randn(sizes(20, d2=3, d7=4, d19=5), generator=g)
    # 10080 elements; a fixed scramble of the 20 dimensions makes every stride differ from C order
    base20 = torch.randn(sizes(20, d0=2, d1=3, d3=4, d5=5, d7=6, d9=7, d19=2), generator=g)
    perm20 = [(7 * i + 3) % 20 for i in range(20)]
    out["rank20_permuted"] = base20.permute(*perm20)
    base40 = torch.randn(sizes(40, d0=2, d13=3, d26=2, d39=7), generator=g)
    out["rank40"] = base40
    out["rank40_permuted"] = base40.permute(*reversed(range(40)))      # same storage as rank40
    out["rank40_half"] = base40.half().transpose(0, 39)
    out["rank100"] = torch.arange(24, dtype=torch.int64).reshape(sizes(100, d5=2, d50=3, d99=4))
    out["rank100_zeros"] = torch.zeros([1] * 100)
    out["rank100_expanded"] = torch.randn([1] * 99 + [3], generator=g).expand([4] + [1] * 98 + [3])
    out["rank60_sliced"] = torch.randn(sizes(60, d30=6, d59=8), generator=g)[..., 1::3]
    out["rank30_empty"] = torch.zeros(sizes(30, d15=0, d16=4))
    out["rank1000"] = torch.arange(6, dtype=torch.int16).reshape([1] * 997 + [2, 1, 3]).transpose(997, 999)
    out["rank50_param"] = nn.Parameter(torch.randn(sizes(50, d49=3), generator=g))
    out["scalar"] = torch.tensor(1.25)
    return out


@fixture("high_rank.pt")
def f_high_rank():
    return high_rank()


# Legacy (pre-1.6) stream format of a few of the above.
@fixture("legacy_lenet.pt")
def f_legacy_lenet():
    return lenet().state_dict()


@fixture("legacy_views.pt")
def f_legacy_views():
    return views_and_sharing()


@fixture("legacy_dtypes.pt")
def f_legacy_dtypes():
    return all_dtypes()


@fixture("legacy_values.pt")
def f_legacy_values():
    return non_tensor_values()


@fixture("legacy_high_rank.pt")
def f_legacy_high_rank():
    return high_rank()


LEGACY = {"legacy_lenet.pt", "legacy_views.pt", "legacy_dtypes.pt", "legacy_values.pt",
          "legacy_high_rank.pt"}

# Pickle protocols 1..5 of one state_dict with _metadata (protocol 0 cannot carry torch's
# tuple persistent ids). Protocol 4/5 bring FRAME, STACK_GLOBAL, MEMOIZE, SHORT_BINUNICODE.
PROTOCOLS = {"protocol%d.pt" % p: p for p in range(1, 6)}
for _name in PROTOCOLS:
    FIXTURES[_name] = lambda: layers_model().state_dict()
PROTOCOLS["legacy_protocol4.pt"] = 4
FIXTURES["legacy_protocol4.pt"] = lambda: non_tensor_values()
LEGACY.add("legacy_protocol4.pt")


@fixture("many_keys.pt")
def f_many_keys():
    """2600 keys: several SETITEMS batches of 1000, memo indices past 256 (LONG_BINPUT)."""
    import torch
    g = torch.Generator().manual_seed(8)
    sd = collections.OrderedDict()
    for i in range(1300):
        sd["layer%d.weight" % i] = torch.randn(2, generator=g)
        sd["layer%d.step" % i] = i
    sd["big_list"] = list(range(2500))
    return sd


# ---- writing ------------------------------------------------------------------------------------

def save(name, obj, outdir):
    import torch
    kw = {}
    if name in LEGACY:
        kw["_use_new_zipfile_serialization"] = False
    if name in PROTOCOLS:
        kw["pickle_protocol"] = PROTOCOLS[name]
    path = os.path.join(outdir, name)
    tmp = path + ".tmp"
    torch.save(obj, tmp, **kw)
    os.replace(tmp, path)
    return path


BIG_NAME = "big_zip64.pt"
BIG_BYTES = 4_300_000_000          # > 4 GiB: sizes and offsets need ZIP64 fields
BIG_NEED_FREE = 10 * 1000**3       # file + slack for the dumps; skip below this


def big_zip64(outdir):
    """One uint8 tensor of 4.3e9 bytes after a small one, so both the payload size and the
    following record's local-header offset pass 4 GiB. Returns the path, or None when the disk
    lacks room (the caller skips, saying so)."""
    import torch
    free = shutil.disk_usage(outdir).free
    if free < BIG_NEED_FREE:
        print("gen_fixtures: only %.1f GB free in %s, need %.1f GB: skipping %s"
              % (free / 1e9, outdir, BIG_NEED_FREE / 1e9, BIG_NAME))
        return None
    big = torch.zeros(BIG_BYTES, dtype=torch.uint8)
    big[0] = 1
    big[BIG_BYTES // 2] = 2
    big[-1] = 255
    obj = collections.OrderedDict([("small", torch.arange(5, dtype=torch.int16)), ("big", big),
                                   ("after", torch.tensor([1.5, -2.0]))])
    return save(BIG_NAME, obj, outdir)


def main(argv):
    if len(argv) in (2, 3) and argv[1] == "--list":
        print("\n".join(names_for(generation(argv[2] if len(argv) == 3 else "1.13"))))
        return 0
    if len(argv) == 3 and argv[1] == "--big":
        os.makedirs(argv[2], exist_ok=True)
        return 0 if big_zip64(argv[2]) else 77
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        import torch  # noqa: F401
    except ImportError as e:
        print("gen_fixtures: torch is not importable (%s): skipping" % e)
        return 77
    outdir = argv[1]
    os.makedirs(outdir, exist_ok=True)
    for name in names_for(generation(torch.__version__)):
        path = save(name, FIXTURES[name](), outdir)
        print("%-24s %10d bytes" % (name, os.path.getsize(path)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
