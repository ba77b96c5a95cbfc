#!/usr/bin/python3
"""GPT-2 in C (src/nn/gpt2.c) against transformers 5.12's GPT2LMHeadModel (torch 2.14).

usage: gpt2_interop.py CASE[+CASE...] INFER GENERATE LAYER_RUN WORKDIR

(Several cases in one run share the cost of importing transformers.)

A small GPT2Config (2 layers, 64 wide, 4 heads, vocab 300, 160 positions) with random weights
drawn wider than the default init (which makes greedy decoding repeat one token), written as
transformers and older transformers wrote it:
  st       save_pretrained: model.safetensors (no lm_head.weight: re-tied on load)
  sharded  save_pretrained(max_shard_size="100KB"): model.safetensors.index.json + shards
  bin      torch.save(state_dict) as pytorch_model.bin, keeping the tied lm_head.weight and the
           attn.bias / attn.masked_bias buffers older transformers saved
  bare     GPT2Model's state_dict (keys without "transformer.", as the hub's own "gpt2")
  untied   pytorch_model.bin whose lm_head.weight differs from wte: transformers keeps them
           apart (it warns it will NOT tie them); so must C
Cases:
  logits    infer --arch gpt2 on every folder, ids of 1, 17 (batch 2) and 128 tokens: logits
            within 1e-4 relative (max |C - torch| / max |torch|) of from_pretrained(DIR)'s
  generate  greedy: 32 new tokens equal to model.generate(do_sample=False) for two prompts and
            two folders; --top-k 5 --seed S: the same ids on two runs, every new token among
            torch's 5 most likely at its step, and a different seed gives different ids
  activation  activation_function "gelu" (exact) and "relu", scale_attn_by_inverse_layer_idx and
            n_inner: logits as transformers'
  layers    tests/gpt2/layer_run against torch's nn.LayerNorm (1 and 2 normalised dims, no
            affine, no bias), nn.GELU (both), nn.Softmax / nn.LogSoftmax (last and a middle dim)
            and transformers' Conv1D, eval forward within 1e-5 relative
  errors    refused configs and state_dicts: clear messages naming the file or key
Exit 77 (skip) when torch or transformers is not importable.
"""
import json
import os
import shutil
import subprocess
import sys

try:
    import torch
    import transformers
    from transformers import GPT2Config, GPT2LMHeadModel
except Exception as e:  # noqa: BLE001
    print(f"SKIP: torch/transformers not importable: {e}")
    sys.exit(77)

transformers.logging.set_verbosity_error()
CASES, INFER, GENERATE, LAYER_RUN, WORK = sys.argv[1:6]
os.makedirs(WORK, exist_ok=True)
torch.set_num_threads(1)
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        failures.append(what)


def make_model(seed=0, **kw):
    args = dict(n_layer=2, n_head=4, n_embd=64, n_positions=160, vocab_size=300)
    args.update(kw)
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(GPT2Config(**args))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("ln_1.weight") or name.endswith("ln_2.weight") or "ln_f.weight" in name:
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            elif p.dim() == 1:
                p.copy_(0.1 * torch.randn_like(p))
            else:
                p.copy_(0.3 * torch.randn_like(p))
    return model.eval()


def write_folders(model, base):
    dirs = {}
    d = os.path.join(base, "st")
    shutil.rmtree(d, ignore_errors=True)
    model.save_pretrained(d)
    dirs["st"] = d
    d = os.path.join(base, "sharded")
    shutil.rmtree(d, ignore_errors=True)
    model.save_pretrained(d, max_shard_size="100KB")
    assert os.path.exists(os.path.join(d, "model.safetensors.index.json"))
    dirs["sharded"] = d
    cfg = os.path.join(dirs["st"], "config.json")
    sd = model.state_dict()
    assert "lm_head.weight" in sd
    old = {}
    P = model.config.n_positions
    for k, v in sd.items():
        old[k] = v
        if k.endswith("attn.c_attn.weight"):  # what transformers < 4.2x registered as buffers
            pre = k[: -len("c_attn.weight")]
            old[pre + "bias"] = torch.tril(torch.ones(P, P, dtype=torch.bool)).view(1, 1, P, P)
            old[pre + "masked_bias"] = torch.tensor(-1e4)
    for name, state in (("bin", old),
                        ("bare", {k[len("transformer."):]: v for k, v in sd.items()
                                  if k.startswith("transformer.")})):
        d = os.path.join(base, name)
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        shutil.copy(cfg, d)
        torch.save(state, os.path.join(d, "pytorch_model.bin"))
        dirs[name] = d
    return dirs


def run(cmd, expect=0):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if r.returncode != expect:
        print("command:", " ".join(cmd), "\nexit", r.returncode, "\nstderr:", r.stderr)
    return r


def c_logits(d, ids, tag):
    inp = os.path.join(WORK, f"ids_{tag}.pt")
    out = os.path.join(WORK, f"logits_{tag}.pt")
    torch.save(ids, inp)
    r = run([INFER, "--arch", "gpt2", "--model", d, "--input", inp, "--output", out])
    if r.returncode != 0:
        return None
    return torch.load(out)


def compare(model, d, ids, tag):
    with torch.no_grad():
        ref = model(ids).logits
    got = c_logits(d, ids, tag)
    if got is None:
        check(False, f"{tag}: infer ran")
        return
    check(got.shape == ref.shape and got.dtype == torch.float32,
          f"{tag}: shape {tuple(got.shape)} dtype {got.dtype}")
    if got.shape == ref.shape:
        rel = ((got - ref).abs().max() / ref.abs().max()).item()
        check(rel <= 1e-4, f"{tag}: max |C - torch| / max |torch| = {rel:.2e} (<= 1e-4)")


def ids_for(seed, b, t):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 300, (b, t), generator=g, dtype=torch.int64)


for CASE in CASES.split("+"):
    if CASE == "logits":
        model = make_model()
        dirs = write_folders(model, WORK)
        for name, d in dirs.items():
            m = GPT2LMHeadModel.from_pretrained(d).eval()
            check(torch.equal(m.lm_head.weight, m.transformer.wte.weight) or name == "bare",
                  f"{name}: transformers ties lm_head")
            for b, t in ((1, 1), (2, 17), (1, 128)):
                compare(m if name != "bare" else model, d, ids_for(t, b, t), f"{name}_{b}x{t}")
        # untied: a pytorch_model.bin whose lm_head differs from wte
        d = os.path.join(WORK, "untied")
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        shutil.copy(os.path.join(dirs["st"], "config.json"), d)
        sd = dict(model.state_dict())
        sd["lm_head.weight"] = 0.3 * torch.randn(300, 64)
        torch.save(sd, os.path.join(d, "pytorch_model.bin"))
        m = GPT2LMHeadModel.from_pretrained(d).eval()
        check(not torch.equal(m.lm_head.weight, m.transformer.wte.weight),
              "untied: transformers keeps a different lm_head apart")
        compare(m, d, ids_for(5, 1, 17), "untied_1x17")

    elif CASE == "generate":
        model = make_model(seed=1)
        dirs = write_folders(model, WORK)
        for name in ("st", "bin"):
            for pi, prompt in enumerate(([5, 17, 250, 3], [42])):
                ids = torch.tensor([prompt])
                with torch.no_grad():
                    ref = model.generate(ids, max_new_tokens=32, do_sample=False,
                                         attention_mask=torch.ones_like(ids), pad_token_id=0)
                ref = ref[0].tolist()
                r = run([GENERATE, "--model", dirs[name], "--prompt", ",".join(map(str, prompt)),
                         "--max-new-tokens", "32"])
                got = [int(x) for x in r.stdout.split()] if r.returncode == 0 else None
                check(got == ref, f"greedy {name} prompt {pi}: C {got} vs transformers {ref}")
                check(len(set(ref[len(prompt):])) > 4, f"greedy {name} prompt {pi}: not one token repeated")
        # a prompt file works as well as a list
        pfile = os.path.join(WORK, "prompt.pt")
        torch.save(torch.tensor([[5, 17, 250, 3]]), pfile)
        r1 = run([GENERATE, "--model", dirs["st"], "--prompt", pfile, "--max-new-tokens", "32"])
        r2 = run([GENERATE, "--model", dirs["st"], "--prompt", "5,17,250,3", "--max-new-tokens", "32"])
        check(r1.returncode == 0 and r1.stdout == r2.stdout, "prompt from a .pt file")
        outs = []
        for seed in (7, 7, 8):
            r = run([GENERATE, "--model", dirs["st"], "--prompt", "5,17,250,3", "--max-new-tokens",
                     "32", "--top-k", "5", "--seed", str(seed)])
            outs.append([int(x) for x in r.stdout.split()] if r.returncode == 0 else None)
        check(outs[0] is not None and outs[0] == outs[1], "top-k: same seed, same ids")
        check(outs[0] != outs[2], "top-k: another seed, other ids")
        if outs[0]:
            with torch.no_grad():
                lg = model(torch.tensor([outs[0]])).logits[0]
            ok = all(outs[0][p] in torch.topk(lg[p - 1], 5).indices.tolist()
                     for p in range(4, len(outs[0])))
            check(ok and len(outs[0]) == 36, "top-k: every new token is among torch's 5 most likely")

    elif CASE == "activation":
        for i, kw in enumerate((dict(activation_function="gelu"),
                                dict(activation_function="relu", n_inner=96),
                                dict(scale_attn_by_inverse_layer_idx=True, layer_norm_epsilon=1e-3,
                                     activation_function="gelu_pytorch_tanh"))):
            model = make_model(seed=10 + i, **kw)
            d = os.path.join(WORK, f"act{i}")
            shutil.rmtree(d, ignore_errors=True)
            model.save_pretrained(d)
            compare(model, d, ids_for(i, 2, 17), f"config {kw}")

    elif CASE == "layers":
        from transformers.pytorch_utils import Conv1D
        import torch.nn as nn
        torch.manual_seed(3)
        x = torch.randn(2, 3, 5, 8)
        specs = [
            ("layernorm:8:1e-05:1:1", nn.LayerNorm(8)),
            ("layernorm:5x8:0.001:1:0", nn.LayerNorm([5, 8], eps=1e-3, bias=False)),
            ("layernorm:8:1e-05:0:0", nn.LayerNorm(8, elementwise_affine=False)),
            ("gelu:none", nn.GELU()),
            ("gelu:tanh", nn.GELU(approximate="tanh")),
            ("softmax:-1", nn.Softmax(dim=-1)),
            ("softmax:1", nn.Softmax(dim=1)),
            ("logsoftmax:-1", nn.LogSoftmax(dim=-1)),
            ("logsoftmax:2", nn.LogSoftmax(dim=2)),
            ("conv1d:6:8", Conv1D(6, 8)),
        ]
        xp = os.path.join(WORK, "layer_x.pt")
        torch.save(3 * x, xp)
        for i, (spec, mod) in enumerate(specs):
            mod.eval()
            with torch.no_grad():
                for p in mod.parameters():
                    p.copy_(torch.randn_like(p))
                ref = mod(3 * x)
            args = [LAYER_RUN, spec, xp, os.path.join(WORK, f"layer_y{i}.pt")]
            if list(mod.parameters()):
                torch.save(mod.state_dict(), os.path.join(WORK, f"layer_w{i}.pt"))
                args.append(os.path.join(WORK, f"layer_w{i}.pt"))
            r = run(args)
            got = torch.load(os.path.join(WORK, f"layer_y{i}.pt")) if r.returncode == 0 else None
            ok = got is not None and got.shape == ref.shape
            rel = ((got - ref).abs().max() / ref.abs().max()).item() if ok else float("nan")
            check(ok and rel <= 1e-5, f"layer {spec}: max |C - torch| / max |torch| = {rel:.2e}")

    elif CASE == "errors":
        model = make_model()
        dirs = write_folders(model, WORK)
        inp = os.path.join(WORK, "ids.pt")
        out = os.path.join(WORK, "out.pt")
        torch.save(ids_for(0, 1, 4), inp)

        def variant(name, edit_cfg=None, edit_sd=None):
            d = os.path.join(WORK, name)
            shutil.rmtree(d, ignore_errors=True)
            os.makedirs(d)
            cfg = json.load(open(os.path.join(dirs["st"], "config.json")))
            if edit_cfg:
                edit_cfg(cfg)
            with open(os.path.join(d, "config.json"), "w") as f:
                json.dump(cfg, f)
            sd = dict(model.state_dict())
            if edit_sd:
                edit_sd(sd)
            torch.save(sd, os.path.join(d, "pytorch_model.bin"))
            return d

        cases = [
            ("swish", lambda c: c.update(activation_function="swish"), None,
             "activation_function \"swish\" is not supported"),
            ("cross", lambda c: c.update(add_cross_attention=True), None,
             "add_cross_attention=true is not supported"),
            ("mtype", lambda c: c.update(model_type="llama"), None, "model_type is \"llama\""),
            ("width", lambda c: c.update(n_embd=65), None, "n_embd must be divisible by n_head"),
            ("missing", None, lambda s: s.pop("transformer.h.1.mlp.c_fc.bias"),
             "missing key transformer.h.1.mlp.c_fc.bias"),
            ("extra", None, lambda s: s.update({"transformer.h.0.attn.q_attn.weight": torch.zeros(2)}),
             "unexpected key transformer.h.0.attn.q_attn.weight"),
            ("shape", None, lambda s: s.update({"transformer.wpe.weight": torch.zeros(10, 64)}),
             "size mismatch for transformer.wpe.weight"),
            ("huge", lambda c: c.update(n_layer=100000, n_embd=4096, n_head=64), None,
             "config.json describes a model of"),
            # an expanded view claims 2^31 elements over a 4-byte storage: it must not pay for
            # the 786M parameters config.json asks for (they were allocated, then refused)
            ("inflated", lambda c: c.update(n_layer=1000, n_embd=256, n_head=4),
             lambda s: s.update({"junk": torch.zeros(1).expand(2**20, 2**11)}),
             "config.json describes a model of"),
            ("untied_missing", lambda c: c.update(tie_word_embeddings=False),
             lambda s: s.pop("lm_head.weight"), "missing key lm_head.weight"),
        ]
        for name, ec, es, msg in cases:
            d = variant(name, ec, es)
            r = run([INFER, "--arch", "gpt2", "--model", d, "--input", inp, "--output", out], expect=1)
            check(r.returncode == 1 and msg in r.stderr, f"{name}: exit 1, '{msg}' in {r.stderr.strip()!r}")
        d = variant("badjson")
        with open(os.path.join(d, "config.json"), "w") as f:
            f.write('{"n_layer": 2, "n_layer": 3}')
        r = run([INFER, "--arch", "gpt2", "--model", d, "--input", inp, "--output", out], expect=1)
        check(r.returncode == 1 and "config.json" in r.stderr and "duplicate" in r.stderr,
              f"duplicate config key: {r.stderr.strip()!r}")
        torch.save(torch.tensor([[1, 300]]), inp)
        r = run([INFER, "--arch", "gpt2", "--model", dirs["st"], "--input", inp, "--output", out], expect=1)
        check(r.returncode == 1 and "token id 300 out of range" in r.stderr, f"id out of range: {r.stderr.strip()!r}")
        torch.save(torch.zeros(1, 161, dtype=torch.int64), inp)
        r = run([INFER, "--arch", "gpt2", "--model", dirs["st"], "--input", inp, "--output", out], expect=1)
        check(r.returncode == 1 and "exceed n_positions 160" in r.stderr, f"too long: {r.stderr.strip()!r}")
        r = run([GENERATE, "--model", dirs["st"], "--prompt", "1,2,3", "--max-new-tokens", "158"], expect=1)
        check(r.returncode == 1 and "exceed n_positions" in r.stderr, f"generate too long: {r.stderr.strip()!r}")
        # the program's name once, then the library's own "GPT-2: ..." text
        r = run([GENERATE, "--model", dirs["st"], "--prompt", "1,300", "--max-new-tokens", "2"], expect=1)
        check(r.returncode == 1 and r.stderr.startswith("generate: GPT-2: token id 300 out of range [0, "),
              f"generate id out of range: {r.stderr.strip()!r}")
        # the output buffer is sized only after n_positions bounds it: no overflow, no huge malloc
        r = run([GENERATE, "--model", dirs["st"], "--prompt", "1,2,3", "--max-new-tokens",
                 str(2**63 - 1)], expect=1)
        check(r.returncode == 1 and "--max-new-tokens 9223372036854775807 exceed n_positions 160"
              in r.stderr, f"generate 2^63-1 new tokens: {r.stderr.strip()!r}")
        r = run([GENERATE, "--model", dirs["st"], "--prompt", "1,,3", "--max-new-tokens", "2"],
                expect=2)
        check(r.returncode == 2 and "field 2 is not an integer" in r.stderr,
              f"generate with an empty prompt field: {r.stderr.strip()!r}")
    else:
        print("unknown case", CASE)
        sys.exit(2)

print(f"{CASES}: {len(failures)} failed")
sys.exit(1 if failures else 0)
