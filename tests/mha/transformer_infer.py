"""examples/infer --arch transformer on torch's nn.TransformerEncoder stacks and a single
nn.TransformerEncoderLayer, against the torch running this script.

    transformer_infer.py INFER OUTDIR

Each case saves a randomized module's state_dict and an input, runs infer with the shape
options, and requires the eval output to match torch's within 1e-5 of its largest magnitude
(norm_first both ways, relu and gelu, batch_first both ways, a final norm, no bias, unbatched
input). Then the shape options that contradict the weights must fail with a message naming the
key. Exit 77 when torch is missing."""
import os
import subprocess
import sys
import warnings

try:
    import torch
    import torch.nn as nn
except ImportError:
    print("torch missing: skipped")
    sys.exit(77)

INFER, OUT = sys.argv[1], sys.argv[2]
os.makedirs(OUT, exist_ok=True)
torch.manual_seed(23)
torch.set_num_threads(1)
warnings.filterwarnings("ignore")
TOL = 1e-5
failures = []
checked = 0


def randomize(m):
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape) * 0.3)
    return m.eval()


def infer(name, module, x, opts):
    w, i, o = (os.path.join(OUT, name + s) for s in ("_w.pt", "_x.pt", "_y.pt"))
    torch.save(module if isinstance(module, dict) else module.state_dict(), w)
    torch.save(x, i)
    r = subprocess.run([INFER, "--arch", "transformer", "--weights", w, "--input", i,
                        "--output", o] + opts, capture_output=True, text=True)
    return r, o


def case(name, d, h, ff, layers, nf, act, bf, final_norm=False, bias=True, single=False,
         unbatched=False, eps=1e-5):
    global checked
    kw = dict(d_model=d, nhead=h, dim_feedforward=ff, dropout=0.1, activation=act,
              layer_norm_eps=eps, batch_first=bf, norm_first=nf)
    if not bias:
        kw["bias"] = False
    layer = nn.TransformerEncoderLayer(**kw)
    if single:
        m = randomize(layer)
    else:
        norm = nn.LayerNorm(d, eps=eps) if final_norm else None
        m = randomize(nn.TransformerEncoder(layer, layers, norm=norm))
    x = torch.randn(7, d) if unbatched else (torch.randn(3, 7, d) if bf else torch.randn(7, 3, d))
    with torch.no_grad():
        ref = m(x)
    opts = ["--d-model", str(d), "--nhead", str(h), "--dim-feedforward", str(ff),
            "--num-layers", str(layers), "--activation", act, "--layer-norm-eps", repr(eps)]
    if nf:
        opts.append("--norm-first")
    if bf:
        opts.append("--batch-first")
    r, o = infer(name, m, x, opts)
    checked += 1
    if r.returncode != 0:
        failures.append(f"{name}: infer failed: {r.stderr.strip()}")
        return
    got = torch.load(o)
    if tuple(got.shape) != tuple(ref.shape):
        failures.append(f"{name}: shape {tuple(got.shape)} != torch's {tuple(ref.shape)}")
        return
    rel = (got - ref).abs().max().item() / ref.abs().max().item()
    print(f"  {name:24s} max rel err {rel:.2e}")
    if not rel <= TOL:
        failures.append(f"{name}: max relative error {rel:.3e} > {TOL}")


case("enc2_relu", 16, 4, 32, 2, False, "relu", False)
case("enc3_gelu_nf_bf", 16, 2, 24, 3, True, "gelu", True, final_norm=True)
case("enc2_nf_norm", 8, 2, 16, 2, True, "relu", False, final_norm=True, eps=1e-6)
case("enc1_gelu_bf", 8, 4, 16, 1, False, "gelu", True)
case("layer_single", 8, 2, 16, 1, True, "gelu", False, single=True)
case("layer_unbatched", 8, 2, 16, 1, False, "relu", False, single=True, unbatched=True)
if tuple(int(v) for v in torch.__version__.split(".")[:2]) >= (2, 1):
    case("enc2_nobias", 8, 2, 16, 2, False, "relu", True, bias=False)

# shape options that contradict the weights: the key is named
m = randomize(nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 4, 32), 2))
x = torch.randn(5, 2, 16)
base = {"--d-model": "16", "--nhead": "4", "--dim-feedforward": "32", "--num-layers": "2"}
for what, change, expect in (
        ("d_model", {"--d-model": "8", "--nhead": "2"},
         "--d-model 8 does not match layers.0.self_attn.in_proj_weight of shape [48, 16]"),
        ("dim_feedforward", {"--dim-feedforward": "64"},
         "--dim-feedforward 64 does not match layers.0.linear1.weight of shape [32, 16]"),
        ("more_layers", {"--num-layers": "1"},
         "--num-layers 1, but the weights have layers.1.self_attn.in_proj_weight"),
        ("fewer_layers", {"--num-layers": "3"},
         "--num-layers 3, but the weights have no layers.2.self_attn.in_proj_weight"),
        ("nhead", {"--nhead": "3"}, "--d-model 16 is not divisible by --nhead 3")):
    opts = dict(base, **change)
    r, _ = infer("bad_" + what, m, x, [a for kv in opts.items() for a in kv])
    checked += 1
    if r.returncode != 1 or expect not in r.stderr:
        failures.append(f"bad_{what}: expected failure with {expect!r}, got rc {r.returncode} "
                        f"{r.stderr.strip()!r}")
r, _ = infer("bad_missing", m, x, ["--nhead", "4"])
checked += 1
if r.returncode != 2 or "--arch transformer needs --d-model and --nhead" not in r.stderr:
    failures.append(f"bad_missing: got rc {r.returncode} {r.stderr.strip()!r}")

# hostile weights and options: refused with the key or option named, before any allocation
expanded = dict(m.state_dict())
expanded["layers.0.self_attn.in_proj_weight"] = torch.zeros(1).expand(3 * 8192, 8192)
not_tensor = dict(m.state_dict())
not_tensor["layers.1.self_attn.in_proj_weight"] = "x"
for what, sd, change, rc, expect in (
        ("expanded", expanded, {"--d-model": "8192", "--nhead": "2"}, 1,
         "layers.0.self_attn.in_proj_weight has 201326592 elements but its storage holds 1"),
        ("not_tensor", not_tensor, {}, 1, "layers.1.self_attn.in_proj_weight in the weights is "
                                          "not a tensor"),
        ("dropout_nan", m, {"--dropout": "nan"}, 2, '--dropout "nan": expected a number in [0, 1]'),
        ("dropout_neg", m, {"--dropout": "-3"}, 2, '--dropout "-3": expected a number in [0, 1]'),
        ("eps_text", m, {"--layer-norm-eps": "1e-5x"}, 2, '--layer-norm-eps "1e-5x"')):
    opts = dict(base, **change)
    r, _ = infer("bad_" + what, sd, x, [a for kv in opts.items() for a in kv])
    checked += 1
    if r.returncode != rc or expect not in r.stderr:
        failures.append(f"bad_{what}: expected rc {rc} with {expect!r}, got rc {r.returncode} "
                        f"{r.stderr.strip()!r}")

print(f"torch {torch.__version__}: {checked} checks, {len(failures)} failures")
for f in failures:
    print("FAIL:", f)
sys.exit(1 if failures else 0)
