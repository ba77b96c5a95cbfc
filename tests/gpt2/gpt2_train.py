#!/usr/bin/python3
"""train --arch gpt2 (C) against transformers 5.12's GPT2LMHeadModel trained by torch 2.14.

usage: gpt2_train.py TRAIN TEXT WORKDIR

One GPT2Config (2 layers, 64 wide, 4 heads, 64 positions, vocab 64, the three dropouts 0), one
set of random weights drawn by torch and scaled as gpt2_interop.py does, AdamW(lr 1e-3,
weight_decay 0.01, eps 1e-6: with the default 1e-8, gradients that are rounding noise in both
torch and C, such as the key third of c_attn.bias whose true gradient is 0, are divided by
sqrt(v) + eps ~ their own size and turn into lr-sized steps of random sign, so the runs part by
~1e-4 for reasons neither side can fix), batches of 4 windows of 32 bytes of TEXT chosen by
train's documented rule
(splitmix64 of seed + (step * B + row + 1) * golden ratio, mod len - T + 1), ids = rank of the
byte among TEXT's distinct bytes, labels = input_ids, loss as transformers computes it:
  start   torch writes the general checkpoint of step 0 (the weights, optimizer.state_dict() with
          no state yet, 'seed'); C's train resumes it for 20 steps and for 10
  steps20 C's 20 steps = torch's 20 steps: every model_state_dict tensor (lm_head.weight
          included, as torch's state_dict has it) and every optimizer state (exp_avg,
          exp_avg_sq, step) within 1e-4 relative (max |C - torch| / max |torch| per tensor);
          the per-step losses C printed within 1e-4 relative of torch's
  c2torch C's 10-step checkpoint loads strictly into GPT2LMHeadModel + AdamW, which run 10
          more steps = C's 20-step result
  torch2c torch's 10-step checkpoint resumed by C's train --resume for 10 steps = torch's 20
  eval    train --epochs 0 --resume --eval prints the mean eval loss over the 32-byte windows
          at 0, 32, ...: equal (1e-4 relative) to torch's model(x, labels=x).loss averaged
  dropout with config dropouts 0.1 the C run still trains (finite, falling loss) and C's
          train-mode losses differ from the dropout-0 run's (dropout is applied)
  refused a vocab_size below the text's distinct bytes, a block longer than n_positions, a
          missing text or config.json, a checkpoint of another model size or with a negative
          'seed': exit 1 or 2 with a
          message naming the file or option, no checkpoint written
Exit 77 (skip) when torch or transformers is not importable.
"""
import json
import os
import re
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
TRAIN, TEXT, WORK = sys.argv[1:4]
os.makedirs(WORK, exist_ok=True)
torch.set_num_threads(1)
failures = []
SEED, B, T, LR, WD, EPS = 7, 4, 32, 1e-3, 0.01, 1e-6
M64 = (1 << 64) - 1


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        failures.append(what)


def rel(a, b):
    a, b = a.double(), b.double()
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


data = open(TEXT, "rb").read()
vocab = sorted(set(data))
ids_all = torch.tensor([vocab.index(c) for c in data], dtype=torch.int64)
NSTART = len(data) - T + 1


def splitmix64(z):
    z ^= z >> 30
    z = (z * 0xBF58476D1CE4E5B9) & M64
    z ^= z >> 27
    z = (z * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def batch(k):
    rows = []
    for b in range(B):
        p = splitmix64((SEED + (k * B + b + 1) * 0x9E3779B97F4A7C15) & M64) % NSTART
        rows.append(ids_all[p:p + T])
    return torch.stack(rows)


CFG = dict(n_layer=2, n_head=4, n_embd=64, n_positions=64, vocab_size=64, attn_pdrop=0.0,
           resid_pdrop=0.0, embd_pdrop=0.0)


def make_model():
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(**CFG))
    with torch.no_grad():  # as gpt2_interop.py: wider than the default init
        for name, p in model.named_parameters():
            if name.endswith("ln_1.weight") or name.endswith("ln_2.weight") or "ln_f.weight" in name:
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            elif p.dim() == 1:
                p.copy_(0.1 * torch.randn_like(p))
            else:
                p.copy_(0.3 * torch.randn_like(p))
    return model


def fresh():
    model = GPT2LMHeadModel(GPT2Config(**CFG))
    return model, torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WD, eps=EPS)


def torch_steps(model, opt, k0, n):
    model.train()
    losses = []
    for k in range(k0, k0 + n):
        x = batch(k)
        opt.zero_grad()
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def save(model, opt, epoch, loss, path):
    torch.save({"epoch": epoch, "model_state_dict": model.state_dict(),
                "optimizer_state_dict": opt.state_dict(), "loss": loss, "seed": SEED}, path)


def run_c(*args):
    r = subprocess.run([TRAIN, "--arch", "gpt2", "--text", TEXT, "--optimizer", "adamw",
                        "--batch-size", str(B), "--block-size", str(T), "--torch", "2.14"]
                       + list(args), capture_output=True, text=True)
    if r.returncode != 0:
        print(r.stdout, r.stderr)
    check(r.returncode == 0, "train " + " ".join(args[-4:]) + " exits 0")
    return r.stdout


def c_losses(out):
    return [float(m) for m in re.findall(r"^step \d+ loss (\S+)$", out, re.M)]


def compare(ck, model, opt, what):
    """ck: a loaded general checkpoint; model/opt: torch's reference after the same steps."""
    msd, ref = ck["model_state_dict"], model.state_dict()
    check(list(msd.keys()) == list(ref.keys()), f"{what}: model_state_dict keys as torch's")
    worst, wkey, kb = 0.0, "", 0.0
    for k in ref:
        a, b = msd[k].clone(), ref[k].clone()
        if k.endswith("attn.c_attn.bias"):
            # The key third of c_attn.bias has a true gradient of 0 (softmax(s + c) = softmax(s):
            # q.b_k is the same for every key), so its gradient is rounding noise in torch and
            # in C alike, which Adam divides by sqrt(v) + eps: compared on its own, within one lr.
            E = CFG["n_embd"]
            kb = max(kb, (a[E:2 * E] - b[E:2 * E]).abs().max().item())
            a[E:2 * E] = 0
            b[E:2 * E] = 0
        r = rel(a, b)
        if r > worst:
            worst, wkey = r, k
    check(worst <= 1e-4, f"{what}: parameters within 1e-4 relative (worst {worst:.2e}, {wkey})")
    check(kb <= LR, f"{what}: key bias (zero true gradient) within lr absolute ({kb:.2e})")
    osd, oref = ck["optimizer_state_dict"], opt.state_dict()
    check(sorted(osd["state"].keys()) == sorted(oref["state"].keys()),
          f"{what}: optimizer state for the same {len(oref['state'])} parameters")
    wa = wv = 0.0
    steps_ok = True
    for i, st in oref["state"].items():
        cs = osd["state"].get(i, {})
        wa = max(wa, rel(cs["exp_avg"], st["exp_avg"]))
        wv = max(wv, rel(cs["exp_avg_sq"], st["exp_avg_sq"]))
        steps_ok = steps_ok and float(cs["step"]) == float(st["step"])
    check(wa <= 1e-4 and wv <= 1e-4,
          f"{what}: exp_avg / exp_avg_sq within 1e-4 relative (worst {wa:.2e} / {wv:.2e})")
    check(steps_ok, f"{what}: every step equals torch's ({float(oref['state'][0]['step'])})")
    g0, r0 = osd["param_groups"][0], oref["param_groups"][0]
    check(g0["lr"] == r0["lr"] and g0["weight_decay"] == r0["weight_decay"]
          and len(g0["params"]) == len(r0["params"]), f"{what}: param_groups as torch's")


# ---- start: torch's step-0 checkpoint and config.json
cfg_path = os.path.join(WORK, "config.json")
GPT2Config(**CFG).to_json_file(cfg_path)
model = make_model()
opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WD, eps=EPS)
ck0 = os.path.join(WORK, "t0.tar")
save(model, opt, 0, 0.0, ck0)
c20, c10 = os.path.join(WORK, "c20.tar"), os.path.join(WORK, "c10.tar")
out20 = run_c("--config", cfg_path, "--resume", ck0, "--epochs", "20", "--checkpoint", c20)
run_c("--config", cfg_path, "--resume", ck0, "--epochs", "10", "--checkpoint", c10)

# ---- torch's 20 steps, saving at 10
tl = torch_steps(model, opt, 0, 10)
t10 = os.path.join(WORK, "t10.tar")
save(model, opt, 10, tl[-1], t10)
tl += torch_steps(model, opt, 10, 10)
cl = c_losses(out20)
check(len(cl) == 20 and max(abs(a - b) / abs(b) for a, b in zip(cl, tl)) <= 1e-4,
      f"steps20: C's 20 losses as torch's ({cl[:1]} .. {cl[-1:]} vs {tl[0]:.6f} .. {tl[-1]:.6f})")
check(tl[-1] < tl[0], f"steps20: the loss falls ({tl[0]:.4f} -> {tl[-1]:.4f})")
ckc20 = torch.load(c20)
check(ckc20["epoch"] == 20 and ckc20["seed"] == SEED, "steps20: 'epoch' 20 and 'seed' saved")
compare(ckc20, model, opt, "steps20")

# ---- c2torch: C's 10-step checkpoint resumed by torch
m2, o2 = fresh()
ck = torch.load(c10)
m2.load_state_dict(ck["model_state_dict"])  # strict
o2.load_state_dict(ck["optimizer_state_dict"])
check(ck["epoch"] == 10, "c2torch: C's checkpoint says epoch 10")
torch_steps(m2, o2, ck["epoch"], 10)
ref_m, ref_o = fresh()
ref_m.load_state_dict(ckc20["model_state_dict"])
ref_o.load_state_dict(ckc20["optimizer_state_dict"])
# compare torch's resumed run against C's own 20-step checkpoint
sd = {"model_state_dict": m2.state_dict(), "optimizer_state_dict": o2.state_dict()}
compare(sd, ref_m, ref_o, "c2torch (torch resumed C's 10 steps vs C's 20)")

# ---- torch2c: torch's 10-step checkpoint resumed by C
ct = os.path.join(WORK, "t10c20.tar")
out = run_c("--config", cfg_path, "--resume", t10, "--epochs", "10", "--checkpoint", ct)
check("resumed from" in out and "at step 10" in out, "torch2c: C resumed at step 10")
compare(torch.load(ct), model, opt, "torch2c (C resumed torch's 10 steps vs torch's 20)")

# ---- eval: the mean eval-mode loss over the windows at 0, 32, ...
out = run_c("--config", cfg_path, "--resume", c20, "--epochs", "0", "--eval", "0:")
m = re.search(r"eval loss (\S+) \(mean over (\d+) windows", out)
model.eval()
with torch.no_grad():
    ws = [ids_all[s:s + T][None] for s in range(0, len(data) - T + 1, T)]
    ref = sum(model(input_ids=w, labels=w).loss.item() for w in ws) / len(ws)
check(m is not None and int(m.group(2)) == len(ws) and abs(float(m.group(1)) - ref) <= 1e-4 * ref,
      f"eval: C's eval loss {m.group(1) if m else None} over {len(ws)} windows = torch's {ref:.6f}")

# ---- dropout: honoured in train mode
cfg_d = os.path.join(WORK, "config_dropout.json")
GPT2Config(**dict(CFG, attn_pdrop=0.1, resid_pdrop=0.1, embd_pdrop=0.1)).to_json_file(cfg_d)
out = run_c("--config", cfg_d, "--resume", ck0, "--epochs", "20", "--checkpoint",
            os.path.join(WORK, "d20.tar"))
dl = c_losses(out)
check(len(dl) == 20 and all(x == x for x in dl) and dl[-1] < dl[0],
      f"dropout: 20 finite steps, loss falls ({dl[0]:.4f} -> {dl[-1]:.4f})")
check(abs(dl[0] - cl[0]) > 1e-4 * abs(cl[0]),
      f"dropout: step 1's train-mode loss differs from the dropout-0 run's ({dl[0]} vs {cl[0]})")

# ---- refusals: a clear message and exit status 1 or 2, no checkpoint written
def refused(args, expect, what):
    r = subprocess.run([TRAIN, "--arch", "gpt2", "--optimizer", "adamw", "--lr", "1e-3",
                        "--batch-size", "2", "--epochs", "1", "--checkpoint",
                        os.path.join(WORK, "never.tar")] + args, capture_output=True, text=True)
    check(r.returncode in (1, 2) and expect in r.stderr
          and not os.path.exists(os.path.join(WORK, "never.tar")),
          f"refused: {what} ({r.returncode}: {r.stderr.strip()[:120]})")


small = os.path.join(WORK, "config_small_vocab.json")
GPT2Config(**dict(CFG, vocab_size=10)).to_json_file(small)
refused(["--config", small, "--text", TEXT], "vocab_size 10 is smaller than the",
        "vocab_size below the text's distinct bytes")
refused(["--config", cfg_path, "--text", TEXT, "--block-size", "65"], "--block-size 65",
        "block larger than n_positions")
refused(["--config", cfg_path, "--text", os.path.join(WORK, "missing.txt")], "missing.txt",
        "a missing text")
refused(["--config", os.path.join(WORK, "missing.json"), "--text", TEXT], "missing.json",
        "a missing config.json")
big = os.path.join(WORK, "config_big.json")
GPT2Config(**dict(CFG, n_embd=32)).to_json_file(big)
refused(["--config", big, "--text", TEXT, "--resume", c10], "size mismatch",
        "a checkpoint of another model size")
bad_seed = os.path.join(WORK, "bad_seed.tar")
ck = torch.load(t10)
ck["seed"] = -3
torch.save(ck, bad_seed)
refused(["--config", cfg_path, "--text", TEXT, "--resume", bad_seed], "'seed' is not an integer",
        "a checkpoint whose 'seed' is negative")
for opt, val in (("--block-size", "0"), ("--block-size", "16x"), ("--epochs", "x"),
                 ("--epochs", str(2**63 - 1)), ("--batch-size", "0"), ("--lr", "1e-3,"),
                 ("--eval", "abc"), ("--eval", "-5:"), ("--eval", "1:2:3")):
    refused(["--config", cfg_path, "--text", TEXT, opt, val], f'{opt} "{val}": not a valid value',
            f"{opt} {val}")
refused(["--config", cfg_path, "--text", TEXT, "--batch-size", str(2**40)],
        "GiB of activations per step, more than the limit of 16 GiB", "a batch of 2^40 rows")
deep = os.path.join(WORK, "config_deep.json")
GPT2Config(**dict(CFG, n_layer=1025)).to_json_file(deep)
refused(["--config", deep, "--text", TEXT], "n_layer 1025 is outside 1..1024", "n_layer 1025")
wide = os.path.join(WORK, "config_wide.json")
GPT2Config(**dict(CFG, vocab_size=2**31 - 1)).to_json_file(wide)
refused(["--config", wide, "--text", TEXT], "more than the limit of 4294967296",
        "vocab_size 2^31-1 (terabytes of parameters)")
untied = os.path.join(WORK, "untied.tar")
ck = torch.load(t10)
ck["model_state_dict"]["lm_head.weight"] = ck["model_state_dict"]["lm_head.weight"] + 1.0
torch.save(ck, untied)
refused(["--config", cfg_path, "--text", TEXT, "--resume", untied],
        "lm_head.weight differs from transformer.wte.weight", "an untied checkpoint for a tied config")

print(f"{len(failures)} failed" if failures else "all gpt2_train checks passed")
sys.exit(1 if failures else 0)
