"""Model folders against huggingface_hub 1.23 and transformers 5.12 (torch 2.14's environment).

    check_hf.py STATEDICT HF_SAVE WORKDIR MODE

MODE is one of
  hub_bin   huggingface_hub.save_torch_state_dict(..., safe_serialization=False) writes .bin
            shards of a state_dict with tied tensors; statedict ls / dump --json / verify / scan
            read the folder and its index (values and order as the index says); convert FOLDER
            out.pt gives torch the same tensors, ties kept.
  hub_st    the same with safetensors shards (needs the safetensors reader).
  write_bin sdict_save_folder (tests/hf/hf_save) writes .bin folders of the same tensors:
            the same file names, index text byte for byte and shard contents as
            save_torch_state_dict for several shard sizes; a single file when all fits; stale
            shards of an earlier save removed.
  write_st  the same for safetensors output (aliases dropped as huggingface_hub drops them;
            needs the safetensors writer).
  tf_bin    transformers GPT2LMHeadModel (tied embeddings) and BertModel, small configs:
            .bin shards from save_torch_state_dict read by statedict; converted to out.pt and
            back into a sharded .bin folder by sdict_save_folder, which from_pretrained loads
            into a model with identical outputs.
  tf_st     save_pretrained(max_shard_size=small) safetensors shards: ls, dump, convert; folder
            to folder conversions (safetensors <-> bin) load with from_pretrained with
            identical outputs (needs the safetensors reader and writer).
Exit 0 on success, 1 on a mismatch, 77 when huggingface_hub/transformers are missing.
"""
import hashlib
import json
import os
import shutil
import subprocess
import sys

try:
    import torch
    from huggingface_hub import save_torch_state_dict
except ImportError as e:  # not this generation's stack
    print(f"SKIP: {e}")
    sys.exit(77)

STATEDICT, HF_SAVE, WORK, MODE = sys.argv[1:5]
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print(f"FAIL: {what}")


def run(*args, expect=0):
    p = subprocess.run([str(a) for a in args], capture_output=True, text=True)
    if p.returncode != expect:
        print(f"FAIL: {' '.join(map(str, args))} exited {p.returncode}, expected {expect}\n"
              f"{p.stdout[-2000:]}{p.stderr[-2000:]}")
        failures.append(f"{args[1]} exit {p.returncode}")
    return p


def fresh(name):
    d = os.path.join(WORK, name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    return d


def sha(t):
    return hashlib.sha256(t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()).hexdigest()


def index_order(folder, name):
    """Keys in the order the index lists them (statedict presents them so)."""
    with open(os.path.join(folder, name)) as f:
        return list(json.load(f)["weight_map"])


def check_reads(folder, index_name, sd, label):
    """ls, dump --json, verify, scan of the folder and of its index; convert to .pt."""
    keys = index_order(folder, index_name)
    check(sorted(keys) == sorted(sd), f"{label}: index keys are the state_dict's")
    for target in (folder, os.path.join(folder, index_name)):
        ls = run(STATEDICT, "ls", target)
        # the tensor lines end at the summary line; metadata lines may follow it
        lines = ls.stdout.splitlines()
        end = next((i for i, l in enumerate(lines) if " tensors, " in l and " format " in l), -1)
        listed = [line.split()[0] for line in lines[:end]]
        check(listed == keys, f"{label}: ls {target} lists the index's keys in its order")
        check("format sharded" in ls.stdout, f"{label}: ls says format sharded")
        dump = json.loads(run(STATEDICT, "dump", "--json", target).stdout)
        items = dump["root"]["items"]
        check([k["value"] for k, _ in items] == keys, f"{label}: dump keys in index order")
        for k, v in items:
            t = sd[k["value"]]
            check(v["sha256"] == sha(t) and v["shape"] == list(t.shape)
                  and v["dtype"] == str(t.dtype).replace("torch.", ""),
                  f"{label}: dump of {k['value']} equals torch's tensor")
        run(STATEDICT, "verify", target)
        run(STATEDICT, "scan", target)
    out = os.path.join(WORK, f"{label}.pt")
    run(STATEDICT, "convert", folder, out)
    back = torch.load(out)
    check(list(back) == keys, f"{label}: convert keeps the index order")
    for k in keys:
        check(torch.equal(back[k], sd[k]) and back[k].dtype == sd[k].dtype,
              f"{label}: converted {k} equals torch's")
    return back


def tied_state_dict():
    torch.manual_seed(0)
    emb = torch.randn(40, 16)
    sd = {
        "embed.weight": emb,
        "blocks.0.w": torch.randn(16, 16),
        "blocks.0.b": torch.randn(16),
        "big": torch.randn(64, 64),          # larger than every shard: a shard of its own
        "blocks.1.w": torch.randn(16, 16).to(torch.bfloat16),
        "blocks.1.i": torch.arange(30, dtype=torch.int64),
        "blocks.1.m": torch.tensor([True, False, True]),
        "head.weight": emb,                  # tied to embed.weight
        "tail": torch.randn(7, dtype=torch.float64),
    }
    return sd


def mode_hub(safe):
    sd = tied_state_dict()
    d = fresh(f"hub_{'st' if safe else 'bin'}")
    save_torch_state_dict(dict(sd), d, max_shard_size=3000, safe_serialization=safe)
    index = "model.safetensors.index.json" if safe else "pytorch_model.bin.index.json"
    check(len([f for f in os.listdir(d) if "-of-" in f]) >= 3, "several shards written")
    ref = dict(sd)
    if safe:
        with open(os.path.join(d, index)) as f:
            md = json.load(f)["metadata"]
        for dropped, kept in md.items():
            if dropped != "total_size":
                ref.pop(dropped)
    back = check_reads(d, index, ref, f"hub_{'st' if safe else 'bin'}")
    if not safe:
        check(back["embed.weight"].data_ptr() == back["head.weight"].data_ptr(),
              "tied tensors stay tied through the folder and convert")


def write_case(safe, max_size, label, keep=(), discard=None):
    sd = tied_state_dict()
    src = os.path.join(WORK, f"{label}_in.pt")
    torch.save(sd, src)
    ref = fresh(f"{label}_ref")
    save_torch_state_dict(dict(sd), ref, max_shard_size=max_size, safe_serialization=safe,
                          shared_tensors_to_discard=discard)
    ours = fresh(f"{label}_ours")
    p = run(HF_SAVE, src, ours, "safetensors" if safe else "bin", max_size, *keep)
    check(sorted(os.listdir(ours)) == sorted(os.listdir(ref)),
          f"{label}: files {sorted(os.listdir(ours))} == huggingface_hub's {sorted(os.listdir(ref))}")
    for name in os.listdir(ref):
        a, b = os.path.join(ref, name), os.path.join(ours, name)
        if not os.path.exists(b):
            continue
        if name.endswith(".index.json"):
            with open(a, "rb") as f, open(b, "rb") as g:
                ta, tb = f.read(), g.read()
            check(ta == tb, f"{label}: {name} text equals huggingface_hub's\n--- hub\n{ta.decode()}\n--- ours\n{tb.decode()}")
        elif safe:
            from safetensors import safe_open
            with safe_open(a, "pt") as fa, safe_open(b, "pt") as fb:
                check(list(fa.keys()) == list(fb.keys()) and fa.metadata() == fb.metadata(),
                      f"{label}: {name} keys and metadata equal huggingface_hub's")
                for k in fa.keys():
                    check(torch.equal(fa.get_tensor(k), fb.get_tensor(k)), f"{label}: {name}:{k}")
        else:
            ta, tb = torch.load(a), torch.load(b)
            check(list(ta) == list(tb), f"{label}: {name} keys equal huggingface_hub's")
            for k in ta:
                check(torch.equal(ta[k], tb[k]), f"{label}: {name}:{k}")
    if safe:
        dropped = [l for l in p.stdout.splitlines() if l.startswith("dropped ")]
        expect = (["dropped embed.weight kept head.weight"] if keep
                  else ["dropped head.weight kept embed.weight"])
        check(dropped == expect, f"{label}: aliases reported as dropped: {dropped}")
    return ours


def mode_write(safe):
    ext = "st" if safe else "bin"
    for size in (3000, 5000, 20000, 1 << 40):
        write_case(safe, size, f"w{ext}_{size}")
    # the name kept among aliases: sdict_save_opts.keep_names as huggingface_hub's
    # shared_tensors_to_discard names the other one (the index metadata says which went)
    write_case(safe, 3000, f"w{ext}_keep", keep=("head.weight",), discard=["embed.weight"])
    # a sharded save, then a single-file save into the same folder: the old shards and index go
    d = write_case(safe, 3000, f"w{ext}_stale")
    src = os.path.join(WORK, f"w{ext}_stale_in.pt")
    run(HF_SAVE, src, d, "safetensors" if safe else "bin", 1 << 40)
    single = "model.safetensors" if safe else "pytorch_model.bin"
    check(sorted(os.listdir(d)) == [single], f"stale shards removed: {sorted(os.listdir(d))}")
    # and back to shards: the single file goes
    run(HF_SAVE, src, d, "safetensors" if safe else "bin", 3000)
    check(single not in os.listdir(d), "stale single file removed when writing shards")


def models():
    from transformers import BertConfig, BertModel, GPT2Config, GPT2LMHeadModel
    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=101, bos_token_id=0, eos_token_id=0,
                                      n_positions=24)).eval()
    bert = BertModel(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                intermediate_size=37, vocab_size=101, bos_token_id=0, eos_token_id=0,
                                max_position_embeddings=24)).eval()
    check(gpt2.lm_head.weight.data_ptr() == gpt2.transformer.wte.weight.data_ptr(),
          "GPT-2's embeddings are tied")
    return [("gpt2", gpt2, GPT2LMHeadModel), ("bert", bert, BertModel)]


def outputs(model):
    ids = torch.tensor([[1, 5, 7, 3, 99, 42, 0, 17]])
    with torch.no_grad():
        out = model(input_ids=ids)
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


def reload_same(cls, folder, config_from, model, label):
    for f in os.listdir(config_from):
        if f.endswith(".json") and "index" not in f:
            shutil.copy(os.path.join(config_from, f), folder)
    m2 = cls.from_pretrained(folder).eval()
    check(torch.equal(outputs(m2), outputs(model)), f"{label}: from_pretrained gives identical outputs")
    sd2 = m2.state_dict()
    for k, v in model.state_dict().items():
        check(torch.equal(sd2[k], v), f"{label}: from_pretrained {k}")


def mode_tf(safe):
    for name, model, cls in models():
        sd = model.state_dict()
        if safe:
            d = fresh(f"tf_{name}_st")
            model.save_pretrained(d, max_shard_size="20KB")
            shards = [f for f in os.listdir(d) if f.endswith(".safetensors")]
            check(len(shards) >= 3, f"{name}: save_pretrained wrote several shards: {shards}")
            keys = index_order(d, "model.safetensors.index.json")
            check_reads(d, "model.safetensors.index.json", {k: sd[k] for k in keys}, f"tf_{name}_st")
            # folder -> .bin folder -> safetensors folder, each loaded by from_pretrained
            b = fresh(f"tf_{name}_st2bin")
            run(HF_SAVE, d, b, "bin", 40000)
            reload_same(cls, b, d, model, f"{name}: safetensors folder -> bin folder")
            s = fresh(f"tf_{name}_bin2st")
            run(HF_SAVE, b, s, "safetensors", 40000)
            reload_same(cls, s, d, model, f"{name}: bin folder -> safetensors folder")
        else:
            d = fresh(f"tf_{name}_bin")
            model.config.save_pretrained(d)
            save_torch_state_dict(dict(sd), d, max_shard_size="20KB", safe_serialization=False)
            check(len([f for f in os.listdir(d) if f.endswith(".bin")]) >= 3,
                  f"{name}: several .bin shards")
            back = check_reads(d, "pytorch_model.bin.index.json", sd, f"tf_{name}_bin")
            if name == "gpt2":
                check(back["lm_head.weight"].data_ptr() == back["transformer.wte.weight"].data_ptr(),
                      "gpt2: tied embeddings stay tied through convert")
            # out.pt -> sharded .bin folder written by statedict -> from_pretrained
            o = fresh(f"tf_{name}_ours")
            run(HF_SAVE, os.path.join(WORK, f"tf_{name}_bin.pt"), o, "bin", 25000)
            check(len([f for f in os.listdir(o) if f.endswith(".bin")]) >= 3,
                  f"{name}: statedict wrote several .bin shards")
            ref = fresh(f"tf_{name}_hubref")
            save_torch_state_dict(dict(sd), ref, max_shard_size=25000, safe_serialization=False)
            with open(os.path.join(o, "pytorch_model.bin.index.json"), "rb") as f, \
                    open(os.path.join(ref, "pytorch_model.bin.index.json"), "rb") as g:
                check(f.read() == g.read(), f"{name}: index text equals huggingface_hub's")
            reload_same(cls, o, d, model, f"{name}: statedict's .bin folder")


os.makedirs(WORK, exist_ok=True)
{"hub_bin": lambda: mode_hub(False), "hub_st": lambda: mode_hub(True),
 "write_bin": lambda: mode_write(False), "write_st": lambda: mode_write(True),
 "tf_bin": lambda: mode_tf(False), "tf_st": lambda: mode_tf(True)}[MODE]()
print(f"{MODE}: {len(failures)} failures")
sys.exit(1 if failures else 0)
