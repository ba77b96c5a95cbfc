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


# ---- what torch 2.x added ----------------------------------------------------------------------

def have(obj, *names):
    return all(hasattr(obj, n) for n in names)


def new_dtype_tensors():
    """One tensor per dtype torch writes through _rebuild_tensor_v3 (storage._new_dtypes() of the
    running torch): every bit pattern of the one-byte types, the full range of the others, and a
    transposed view with a storage offset, so offsets and strides of untyped storages count."""
    import torch
    g = torch.Generator().manual_seed(9)
    pattern = torch.arange(256, dtype=torch.uint8)
    out = collections.OrderedDict()
    for d in sorted(torch.storage._new_dtypes(), key=str):
        name = str(d).replace("torch.", "")
        if d.itemsize == 1:
            t = pattern.view(d)
        elif name in ("complex32", "bcomplex32"):
            half = torch.float16 if name == "complex32" else torch.bfloat16
            parts = torch.cat([torch.randn(14, generator=g),
                               torch.tensor([0.0, -0.0, math.inf, -math.inf, math.nan, 65504.0])])
            t = parts.to(half).view(d)
        else:
            # uint16/32/64, bits16: the whole range as raw bits, then the exact extremes
            bits = torch.randint(-2**15, 2**15, (12,), generator=g, dtype=torch.int16)
            t = bits.view(torch.uint8).view(d) if d.itemsize == 2 else \
                torch.randint(0, 2**30, (12 * d.itemsize // 4,), generator=g,
                              dtype=torch.int32).view(torch.uint8).view(d)
        out[name] = t
        if t.numel() >= 12:
            out[name + "_view"] = t[:12].view(3, 4)[1:, 1:].t()   # offset 5, strides (1, 4)
    return out


@fixture("dtypes_v3.pt", since=(2, 1))
def f_dtypes_v3():
    return new_dtype_tensors()


@fixture("dtype_objects.pt")
def f_dtype_objects():
    """Every dtype object the running torch has, as values (torch.uint4, torch.bits16, ...)."""
    import torch
    seen = {}
    for n in sorted(dir(torch)):
        v = getattr(torch, n, None)
        if isinstance(v, torch.dtype):
            seen.setdefault(str(v), v)
    return collections.OrderedDict([("all", [seen[k] for k in sorted(seen)])])


def quantized_tensors():
    """Per-tensor (quint8, qint8, qint32, quint4x2, quint2x4) and per-channel quantized tensors
    (int zero points; float zero points, torch's float_qparams), views of them, and the state
    dicts of torch's quantized Linear and Embedding modules."""
    import torch
    g = torch.Generator().manual_seed(10)
    x = torch.randn(4, 6, generator=g)
    out = collections.OrderedDict()
    for dt in ("quint8", "qint8", "qint32", "quint4x2", "quint2x4"):
        if hasattr(torch, dt):
            out["per_tensor_" + dt] = torch.quantize_per_tensor(x, 0.05, 3 if "u" in dt else -2,
                                                                getattr(torch, dt))
    out["odd_count_quint4x2"] = torch.quantize_per_tensor(torch.arange(5.), 1.0, 0, torch.quint4x2)
    scales = torch.tensor([0.1, 0.2, 0.05, 0.3], dtype=torch.double)
    zps = torch.tensor([0, 1, -2, 3])
    out["per_channel_axis0"] = torch.quantize_per_channel(x, scales, zps, 0, torch.qint8)
    out["per_channel_axis1"] = torch.quantize_per_channel(
        x, torch.linspace(0.01, 0.06, 6, dtype=torch.double), torch.arange(6), 1, torch.quint8)
    obs = torch.quantization.observer.PerChannelMinMaxObserver(
        ch_axis=0, dtype=torch.quint8, qscheme=torch.per_channel_affine_float_qparams)
    obs(x)
    s, z = obs.calculate_qparams()
    out["float_qparams"] = torch.quantize_per_channel(x, s, z, 0, torch.quint8)
    out["transposed"] = out["per_tensor_qint8"].t()
    out["row"] = out["per_tensor_quint8"][1]
    nnq = torch.nn.quantized
    torch.manual_seed(10)
    out["linear"] = nnq.Linear(6, 3).state_dict()
    out["embedding"] = nnq.Embedding(10, 4).state_dict()
    return out


@fixture("quantized.pt")
def f_quantized():
    return quantized_tensors()


def coo_and_csr():
    import torch
    g = torch.Generator().manual_seed(11)
    dense = torch.randn(5, 6, generator=g) * (torch.rand(5, 6, generator=g) > 0.6)
    out = collections.OrderedDict()
    out["coo"] = dense.to_sparse()
    unc = torch.sparse_coo_tensor(torch.tensor([[1, 0, 1], [2, 3, 2]]), torch.tensor([1., 2., 3.]),
                                  (2, 4))
    out["coo_uncoalesced"] = unc
    out["coo_hybrid"] = torch.randn(4, 3, 2, generator=g).to_sparse(1)   # one dense dimension
    out["coo_empty"] = torch.sparse_coo_tensor(torch.zeros(2, 0, dtype=torch.long),
                                               torch.zeros(0), (3, 3))
    out["coo_int"] = torch.tensor([[0, 7], [-3, 0]]).to_sparse()
    out["csr"] = dense.to_sparse_csr()
    out["sparse_param"] = torch.nn.Parameter(dense.to_sparse(), requires_grad=False)
    out["shared_values"] = [out["coo"], out["coo"]]
    return out


@fixture("sparse.pt")
def f_sparse():
    return coo_and_csr()


@fixture("sparse_compressed.pt", since=(2, 1))
def f_sparse_compressed():
    """The layouts torch 1.13 cannot save: CSC, BSR, BSC, batched CSR, int32 indices."""
    import torch
    g = torch.Generator().manual_seed(12)
    dense = torch.randn(4, 6, generator=g) * (torch.rand(4, 6, generator=g) > 0.5)
    out = collections.OrderedDict()
    out["csc"] = dense.to_sparse_csc()
    out["bsr"] = dense.to_sparse_bsr((2, 3))
    out["bsc"] = dense.to_sparse_bsc((2, 2))
    out["csr_batched"] = torch.stack([dense, dense * 2]).to_sparse_csr()
    out["csr_int32"] = torch.sparse_csr_tensor(torch.tensor([0, 1, 3], dtype=torch.int32),
                                               torch.tensor([2, 0, 1], dtype=torch.int32),
                                               torch.tensor([1., 2., 3.]), (2, 3))
    out["csr_hybrid"] = torch.randn(3, 4, 2, generator=g).to_sparse_csr(dense_dim=1)
    return out


def torch_objects():
    """Non-tensor torch objects torch 2.x's weights_only loader allows: Counter, torch.device,
    complex, qschemes, layouts, as values and dict keys."""
    import torch
    layouts = [getattr(torch, n) for n in ("strided", "sparse_coo", "sparse_csr", "sparse_csc",
                                           "sparse_bsr", "sparse_bsc", "_mkldnn", "jagged")
               if hasattr(torch, n)]
    return collections.OrderedDict([
        ("counter", collections.Counter({3: 1, 5: 2, "x": -1})),
        ("empty_counter", collections.Counter()),
        ("devices", [torch.device("cpu"), torch.device("cpu", 0), torch.device("cuda", 1),
                     torch.device("meta"), torch.device("cuda")]),
        ("complex", [complex(1.5, -2), 1j, complex(-0.0, 0.0), complex(math.inf, math.nan),
                     complex(1e-300, -1e300)]),
        ("qschemes", [torch.per_tensor_affine, torch.per_channel_affine,
                      torch.per_tensor_symmetric, torch.per_channel_symmetric,
                      torch.per_channel_affine_float_qparams]),
        ("layouts", layouts),
        ("keys", {torch.device("cuda", 0): "dev", complex(1, 2): "c", torch.float16: "dt"}),
        ("shared_device", [torch.device("cpu")] * 2),
    ])


@fixture("objects.pt")
def f_objects():
    return torch_objects()


@fixture("tensor_attrs.pt", since=(2, 1))
def f_tensor_attrs():
    """Tensors and Parameters with Python attributes (_rebuild_from_type_v2,
    _rebuild_parameter_with_state), and the lazy conjugate and negative bits."""
    import torch
    g = torch.Generator().manual_seed(13)
    p = torch.nn.Parameter(torch.randn(3, generator=g))
    p.note = "tied"
    p.extra = [1, 2.5]
    t = torch.randn(2, 2, generator=g)
    t.tag = 7
    c = torch.complex(torch.randn(4, generator=g), torch.randn(4, generator=g))
    return collections.OrderedDict([
        ("param_attrs", p), ("tensor_attrs", t), ("conj", c.conj()),
        ("neg", torch.complex(torch.randn(3, generator=g), torch.randn(3, generator=g)).conj().imag),
        ("conj_view", torch.complex(torch.randn(6, generator=g),
                                    torch.randn(6, generator=g)).conj()[1::2]),
    ])


@fixture("nested.pt", since=(2, 1))
def f_nested():
    import torch
    g = torch.Generator().manual_seed(14)
    a = torch.nested.nested_tensor([torch.randn(3, generator=g), torch.randn(5, generator=g)])
    b = torch.nested.nested_tensor([torch.randn(2, 3, generator=g), torch.randn(4, 3, generator=g)])
    return collections.OrderedDict([("vectors", a), ("matrices", b),
                                    ("transposed", b.transpose(1, 2))])


@fixture("device_tensor.pt", since=(2, 5))
def f_device_tensor():
    """_rebuild_device_tensor_from_cpu_tensor, as torch writes tensors of storage-less devices
    (XLA, MTIA): made here with a reduce that names it directly."""
    import torch

    class FromDevice:
        def __init__(self, t, dtype, rg):
            self.args = (t, dtype, "cpu", rg)

        def __reduce__(self):
            return (torch._utils._rebuild_device_tensor_from_cpu_tensor, self.args)

    x = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    return collections.OrderedDict([("same_dtype", FromDevice(x, torch.float32, False)),
                                    ("to_double", FromDevice(x.t(), torch.float64, True)),
                                    ("to_int", FromDevice(x, torch.int16, False))])


def schedulers():
    """LR schedulers' state_dicts (MultiStepLR keeps a Counter) with their optimizer, whose
    param_groups carry initial_lr."""
    import torch
    import torch.optim as optim
    torch.manual_seed(15)
    m = torch.nn.Linear(4, 2)
    out = collections.OrderedDict()
    opt = optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    scheds = collections.OrderedDict([
        ("multistep", optim.lr_scheduler.MultiStepLR(opt, milestones=[2, 5, 5], gamma=0.5)),
        ("step", optim.lr_scheduler.StepLR(opt, step_size=3)),
        ("cosine", optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10)),
        ("plateau", optim.lr_scheduler.ReduceLROnPlateau(opt)),
    ])
    one = optim.Adam(m.parameters(), lr=1e-3)
    scheds["onecycle"] = optim.lr_scheduler.OneCycleLR(one, max_lr=0.01, total_steps=20)
    for _ in range(3):
        m(torch.randn(2, 4)).sum().backward()
        opt.step()
        one.step()
        for name, s in scheds.items():
            if name == "plateau":
                s.step(1.0)
            else:
                s.step()
    out["optimizer"] = opt.state_dict()
    out["adam"] = one.state_dict()
    for name, s in scheds.items():
        # torch 1.13's OneCycleLR keeps its anneal function, a bound method, in its state_dict;
        # only a loader that runs code can rebuild one (2.x stores its name instead)
        out[name] = {k: v for k, v in s.state_dict().items() if not callable(v)}
    return out


@fixture("schedulers.pt")
def f_schedulers():
    return schedulers()


@fixture("optim_flags.pt", since=(2, 1))
def f_optim_flags():
    """SGD, Adam, AdamW state_dicts with every flag the running torch has: foreach, fused,
    capturable, differentiable, decoupled_weight_decay."""
    import inspect
    import torch
    import torch.optim as optim
    out = collections.OrderedDict()
    for cls in (optim.SGD, optim.Adam, optim.AdamW):
        params = inspect.signature(cls.__init__).parameters
        flags = [("plain", {})]
        for flag in ("foreach", "fused", "capturable", "differentiable", "decoupled_weight_decay"):
            if flag in params:
                flags.append((flag, {flag: True}))
        for tag, kw in flags:
            torch.manual_seed(16)
            m = torch.nn.Linear(3, 2)
            extra = {"momentum": 0.9} if cls is optim.SGD else {}
            try:
                opt = cls(m.parameters(), lr=0.01, **extra, **kw)
            except (RuntimeError, ValueError) as e:
                print("gen_fixtures: %s(%s) skipped: %s" % (cls.__name__, tag, e))
                continue
            try:
                for _ in range(2):
                    opt.zero_grad()
                    m(torch.randn(4, 3)).pow(2).sum().backward()
                    opt.step()
            except (RuntimeError, ValueError, AssertionError) as e:
                # capturable needs a GPU, differentiable a graph: keep the flags, no state
                print("gen_fixtures: %s(%s) saved before any step: %s" % (cls.__name__, tag, e))
                opt = cls(m.parameters(), lr=0.01, **extra, **kw)
            out["%s_%s" % (cls.__name__, tag)] = opt.state_dict()
    return out


@fixture("torchvision_models.pt")
def f_torchvision_models():
    """Small torchvision models' state_dicts (OrderedDicts with _metadata)."""
    import torch
    import torchvision
    torch.manual_seed(17)
    return collections.OrderedDict([
        ("squeezenet1_1", torchvision.models.squeezenet1_1(weights=None).state_dict()),
        ("mobilenet_v3_small", torchvision.models.mobilenet_v3_small(weights=None).state_dict()),
    ])


# torch 2.x's other ways to save: pickle protocols 4 and 5, the legacy stream format, payload
# alignments other than 64, no CRCs. Quantized and sparse tensors go in separate files: torch
# 2.14 keys its "one storage, two dtypes" check by data pointer, and the per-channel parameter
# tensors it makes while pickling a quantized tensor sometimes share an address with a sparse
# tensor's part, so saving both at once fails now and then ("Cannot save multiple tensors or
# storages that view the same data as different types").
@fixture("new_protocol5.pt", since=(2, 1))
def f_new_protocol5():
    return collections.OrderedDict([("v3", new_dtype_tensors()), ("objects", torch_objects()),
                                    ("quantized", quantized_tensors())])


@fixture("legacy_new.pt", since=(2, 1))
def f_legacy_new():
    return collections.OrderedDict([("objects", torch_objects()), ("sparse", coo_and_csr())])


@fixture("legacy_quantized.pt", since=(2, 1))
def f_legacy_quantized():
    return quantized_tensors()


@fixture("legacy_dtypes_v3.pt", since=(2, 1))
def f_legacy_dtypes_v3():
    return new_dtype_tensors()


@fixture("align16.pt", since=(2, 7))
def f_align16():
    return views_and_sharing()


@fixture("align4096.pt", since=(2, 7))
def f_align4096():
    return all_dtypes()


@fixture("no_crc.pt", since=(2, 6))
def f_no_crc():
    return all_dtypes()


SAVE_ALIGNMENT = {"align16.pt": 16, "align4096.pt": 4096}
PROTOCOLS["new_protocol5.pt"] = 5
LEGACY.update({"legacy_new.pt", "legacy_quantized.pt", "legacy_dtypes_v3.pt"})

# Files torch writes but cannot load back: the interop test compares statedict's reading of them
# with torch's reading of a fixture of the same content. torch 2.x's legacy loader looks up
# `storage_type.dtype` on UntypedStorage, which has none, so every dtype saved through
# _rebuild_tensor_v3 is unreadable in a legacy-format file (AttributeError).
SAME_AS = {"legacy_dtypes_v3.pt": "dtypes_v3.pt"}

# Fixtures whose every tensor `statedict show` must print as torch's str() (show_check.py).
SHOW_CHECK = {"dtypes.pt", "views.pt", "dtypes_v3.pt", "quantized.pt", "sparse.pt",
              "sparse_compressed.pt", "nested.pt", "tensor_attrs.pt", "device_tensor.pt"}


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
    if name in SAVE_ALIGNMENT:
        from torch.utils.serialization import config
        saved, config.save.storage_alignment = config.save.storage_alignment, SAVE_ALIGNMENT[name]
    if name == "no_crc.pt":
        torch.serialization.set_crc32_options(False)
    try:
        torch.save(obj, tmp, **kw)
    finally:
        if name in SAVE_ALIGNMENT:
            config.save.storage_alignment = saved
        if name == "no_crc.pt":
            torch.serialization.set_crc32_options(True)
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
