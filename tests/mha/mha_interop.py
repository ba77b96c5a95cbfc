"""nn.MultiheadAttention, nn.TransformerEncoderLayer and nn.TransformerDecoderLayer from torch
state_dicts, run by statedict_nn (tests/mha/mha_run.c), against the torch running this script.

    mha_interop.py MHA_RUN OUTDIR

For each case: random weights (every parameter, LayerNorm's and the biases included), inputs
and masks are saved; mha_run loads the state_dict strictly and writes the eval output (and the
attention weights); the script requires max|c - torch| <= 1e-5 * max|torch| for each.
Then both Transformer layers in training mode with dropout 0 (norm_first both ways, relu and
gelu, with and without masks): the output, the gradients of the inputs (src, or tgt and memory)
and of every parameter after one backward of dy must match torch's autograd within 1e-4 of the
tensor's largest magnitude. Exit 77 when torch is missing."""
import os
import warnings
import subprocess
import sys

try:
    import torch
    import torch.nn as nn
except ImportError:
    print("torch missing: skipped")
    sys.exit(77)

RUN, OUT = sys.argv[1], sys.argv[2]
os.makedirs(OUT, exist_ok=True)
torch.manual_seed(15)
torch.set_num_threads(1)
TOL = 1e-5
warnings.filterwarnings("ignore")
failures = []
checked = 0


def randomize(m):
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape) * 0.4)
    return m.eval()


def run(name, spec, module, inputs, expect_fail=None):
    sd, inp, out = (os.path.join(OUT, name + s) for s in ("_sd.pt", "_in.pt", "_out.pt"))
    torch.save(module.state_dict(), sd)
    torch.save(inputs, inp)
    r = subprocess.run([RUN, spec, sd, inp, out], capture_output=True, text=True)
    if expect_fail is not None:
        if r.returncode != 1 or expect_fail not in r.stderr:
            failures.append(f"{name}: expected failure with {expect_fail!r}, got rc "
                            f"{r.returncode} {r.stderr.strip()!r}")
        return None
    if r.returncode != 0:
        failures.append(f"{name}: mha_run failed: {r.stderr.strip()}")
        return None
    return torch.load(out)


def compare(name, what, got, ref):
    global checked
    checked += 1
    if got is None or tuple(got.shape) != tuple(ref.shape):
        failures.append(f"{name} {what}: shape {None if got is None else tuple(got.shape)} "
                        f"!= torch's {tuple(ref.shape)}")
        return
    err = (got - ref).abs().max().item()
    scale = ref.abs().max().item()
    rel = err / scale if scale > 0 else err
    print(f"  {name:28s} {what:8s} max rel err {rel:.2e}")
    if not rel <= TOL:
        failures.append(f"{name} {what}: max relative error {rel:.3e} > {TOL}")


E, H, L, S, N = 8, 2, 5, 6, 3


def seq(n, l, bf, e=E):
    return torch.randn(n, l, e) if bf else torch.randn(l, n, e)


def kpm(n, s):
    m = torch.zeros(n, s, dtype=torch.bool)
    m[0, -2:] = True
    m[n - 1, 1] = True
    return m


# ---- MultiheadAttention
def mha_case(name, bf, bias=True, cross=False, am=None, kp=None, avg=True, unbatched=False):
    m = randomize(nn.MultiheadAttention(E, H, bias=bias, batch_first=bf))
    if unbatched:
        q = torch.randn(L, E)
        k = v = q if not cross else torch.randn(S, E)
    else:
        q = seq(N, L, bf)
        k = q if not cross else seq(N, S, bf)
        v = q if not cross else seq(N, S, bf)
    inputs = {"query": q, "key": k, "value": v}
    if am is not None:
        inputs["attn_mask"] = am
    if kp is not None:
        inputs["key_padding_mask"] = kp
    with torch.no_grad():
        ref, w = m(q, k, v, key_padding_mask=kp, need_weights=True, attn_mask=am,
                   average_attn_weights=avg)
    got = run(name, f"mha:{E}:{H}:{int(bias)}:{int(bf)}:1:{int(avg)}:0", m, inputs)
    compare(name, "output", None if got is None else got["out"], ref)
    compare(name, "weights", None if got is None else got.get("weights"), w)


for bf in (False, True):
    mha_case(f"mha_self_bf{int(bf)}", bf)
    mha_case(f"mha_cross_bf{int(bf)}", bf, cross=True)
    mha_case(f"mha_masks_bool_bf{int(bf)}", bf, cross=True,
             am=torch.rand(L, S) > 0.7, kp=kpm(N, S), avg=False)
    mha_case(f"mha_masks_float_bf{int(bf)}", bf, cross=True,
             am=torch.randn(N * H, L, S), kp=kpm(N, S))
mha_case("mha_nobias", False, bias=False, am=torch.randn(L, L))
mha_case("mha_unbatched", False, cross=True, unbatched=True, kp=torch.tensor([False, True, False, False, False, True]))

# refusals: a wrong mask shape, and a kdim/vdim module's separate projections
m = randomize(nn.MultiheadAttention(E, H))
q = seq(N, L, False)
run("mha_bad_mask", f"mha:{E}:{H}:1:0:1:1:0", m,
    {"query": q, "key": q, "value": q, "key_padding_mask": torch.zeros(N, L + 1, dtype=torch.bool)},
    expect_fail="key_padding_mask must be [3, 5]")
run("mha_kdim", f"mha:{E}:{H}:1:0:1:1:0", randomize(nn.MultiheadAttention(E, H, kdim=4, vdim=4)),
    {"query": q, "key": q, "value": q}, expect_fail="q_proj_weight")


# ---- Transformer layers
FF = 16


def layer_kwargs(bf, nf, act):
    return dict(d_model=E, nhead=H, dim_feedforward=FF, dropout=0.1, activation=act,
                layer_norm_eps=1e-5 if not nf else 1e-6, batch_first=bf, norm_first=nf)


def causal(n):
    return torch.triu(torch.full((n, n), float("-inf")), diagonal=1)


for nf in (False, True):
    for bf, act in ((False, "relu"), (True, "gelu")):
        kw = layer_kwargs(bf, nf, act)
        spec_tail = f"{E}:{H}:{FF}:{int(act == 'gelu')}:{kw['layer_norm_eps']}:{int(bf)}:{int(nf)}"
        enc = randomize(nn.TransformerEncoderLayer(**kw))
        src = seq(N, L, bf)
        name = f"enc_nf{int(nf)}_bf{int(bf)}_{act}"
        sm = torch.randn(L, L)
        bm = torch.rand(L, L) > 0.7
        bm.fill_diagonal_(False)
        with torch.no_grad():
            ref = enc(src)
            ref_b = enc(src, src_mask=bm, src_key_padding_mask=kpm(N, L))
            ref_c = enc(src, src_mask=causal(L))
        # A float src_mask with a bool key padding mask: the reference is torch's math path
        # (autograd on), as the fused eval path of torch 2.14 (batch_first, no_grad) returns NaN
        # for whole sequences there.
        ref_m = enc(src, src_mask=sm, src_key_padding_mask=kpm(N, L)).detach()
        got = run(name, "enc:" + spec_tail + ":0", enc, {"src": src})
        compare(name, "output", got and got["out"], ref)
        got = run(name + "_masks", "enc:" + spec_tail + ":0", enc,
                  {"src": src, "src_mask": sm, "src_key_padding_mask": kpm(N, L)})
        compare(name + "_masks", "output", got and got["out"], ref_m)
        got = run(name + "_bool_masks", "enc:" + spec_tail + ":0", enc,
                  {"src": src, "src_mask": bm, "src_key_padding_mask": kpm(N, L)})
        compare(name + "_bool_masks", "output", got and got["out"], ref_b)
        got = run(name + "_causal", "enc:" + spec_tail + ":1", enc, {"src": src})
        compare(name + "_causal", "output", got and got["out"], ref_c)

        dec = randomize(nn.TransformerDecoderLayer(**kw))
        tgt, mem = seq(N, L, bf), seq(N, S, bf)
        name = f"dec_nf{int(nf)}_bf{int(bf)}_{act}"
        mm = torch.rand(L, S) > 0.8
        with torch.no_grad():
            ref = dec(tgt, mem)
            ref_m = dec(tgt, mem, tgt_mask=causal(L), memory_mask=mm,
                        tgt_key_padding_mask=kpm(N, L), memory_key_padding_mask=kpm(N, S))
        got = run(name, "dec:" + spec_tail + ":0", dec, {"tgt": tgt, "memory": mem})
        compare(name, "output", got and got["out"], ref)
        got = run(name + "_masks", "dec:" + spec_tail + ":0", dec,
                  {"tgt": tgt, "memory": mem, "tgt_mask": causal(L), "memory_mask": mm,
                   "tgt_key_padding_mask": kpm(N, L), "memory_key_padding_mask": kpm(N, S)})
        compare(name + "_masks", "output", got and got["out"], ref_m)


# ---- Transformer layers in training mode, dropout 0: gradients of every parameter and of the
# inputs after one backward of torch's autograd, within GRAD_TOL relative (max over the tensor)
GRAD_TOL = 1e-4


def run_train(name, spec, module, inputs, out_args):
    """torch: out = module(**out_args) in training mode, out.backward(dy); C: the same."""
    module.zero_grad()
    for v in out_args.values():
        if isinstance(v, torch.Tensor) and v.is_floating_point() and v.requires_grad:
            v.grad = None
    out = module(**out_args)
    dy = torch.randn(out.shape)
    out.backward(dy)
    inputs = dict(inputs, dy=dy)
    sd, inp, res = (os.path.join(OUT, name + s) for s in ("_sd.pt", "_in.pt", "_out.pt"))
    torch.save(module.state_dict(), sd)
    torch.save({k: v.detach() for k, v in inputs.items()}, inp)
    r = subprocess.run([RUN, spec, sd, inp, res, "train"], capture_output=True, text=True)
    if r.returncode != 0:
        failures.append(f"{name}: mha_run train failed: {r.stderr.strip()}")
        return
    got = torch.load(res)
    compare_tol(name, "output", got.get("out"), out.detach(), GRAD_TOL)
    first = next(iter(out_args.values()))
    compare_tol(name, "d_input", got.get("d_input"), first.grad, GRAD_TOL)
    if "memory" in out_args:
        compare_tol(name, "d_memory", got.get("d_memory"), out_args["memory"].grad, GRAD_TOL)
    for k, p in module.named_parameters():
        compare_tol(name, k, got.get("grad." + k), p.grad, GRAD_TOL)


def compare_tol(name, what, got, ref, tol):
    global checked, worst
    checked += 1
    if got is None or ref is None or tuple(got.shape) != tuple(ref.shape):
        failures.append(f"{name} {what}: missing or shape differs from torch's")
        return
    err = (got - ref).abs().max().item()
    scale = ref.abs().max().item()
    rel = err / scale if scale > 0 else err
    worst = max(worst, rel)
    if not rel <= tol:
        failures.append(f"{name} {what}: max relative error {rel:.3e} > {tol}")


worst = 0.0
for nf in (False, True):
    for bf, act in ((False, "relu"), (True, "gelu")):
        kw = dict(layer_kwargs(bf, nf, act), dropout=0.0)
        spec_tail = f"{E}:{H}:{FF}:{int(act == 'gelu')}:{kw['layer_norm_eps']}:{int(bf)}:{int(nf)}"
        enc = randomize(nn.TransformerEncoderLayer(**kw)).train()
        src = seq(N, L, bf).requires_grad_()
        name = f"train_enc_nf{int(nf)}_bf{int(bf)}_{act}"
        run_train(name, "enc:" + spec_tail + ":0", enc, {"src": src}, {"src": src})
        src = seq(N, L, bf).requires_grad_()
        sm = torch.randn(L, L)
        run_train(name + "_masks", "enc:" + spec_tail + ":0", enc,
                  {"src": src, "src_mask": sm, "src_key_padding_mask": kpm(N, L)},
                  {"src": src, "src_mask": sm, "src_key_padding_mask": kpm(N, L)})

        dec = randomize(nn.TransformerDecoderLayer(**kw)).train()
        tgt, mem = seq(N, L, bf).requires_grad_(), seq(N, S, bf).requires_grad_()
        name = f"train_dec_nf{int(nf)}_bf{int(bf)}_{act}"
        run_train(name, "dec:" + spec_tail + ":0", dec, {"tgt": tgt, "memory": mem},
                  {"tgt": tgt, "memory": mem})
        tgt, mem = seq(N, L, bf).requires_grad_(), seq(N, S, bf).requires_grad_()
        run_train(name + "_masks", "dec:" + spec_tail + ":0", dec,
                  {"tgt": tgt, "memory": mem, "tgt_mask": causal(L),
                   "tgt_key_padding_mask": kpm(N, L), "memory_key_padding_mask": kpm(N, S)},
                  {"tgt": tgt, "memory": mem, "tgt_mask": causal(L),
                   "tgt_key_padding_mask": kpm(N, L), "memory_key_padding_mask": kpm(N, S)})
print(f"  training-mode outputs and gradients: worst max rel err {worst:.2e}")

print(f"torch {torch.__version__}: {checked} comparisons, {len(failures)} failures")
for f in failures:
    print("FAIL:", f)
sys.exit(1 if failures else 0)
