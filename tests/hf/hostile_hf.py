"""Hostile model folders and shard indexes (standard library only).

    hostile_hf.py STATEDICT HF_SAVE EXAMPLES_DATA WORKDIR

A sharded .bin folder is made from examples/data/lenet.pt by sdict_save_folder (hf_save), then
each case breaks one rule of src/hf_folder.c in a copy of it. Every case must make `ls`,
`dump --json` and `convert` exit 3 and `verify` and `scan` fail, each naming the file and the
entry (the weight_map key or the shard) in its message; no case may crash or hang. The valid
folder, its index, a link to a shard inside the folder and a single-file folder are read in
the index's order, and convert of the folder gives back lenet.pt's tensors (statedict diff).
Cost: one file named by many shard names (links) is refused before any shard is read, and an
index of 20,000 tiny shards is listed within 16 x its bytes + 64 MB of memory (each shard's
document is freed once its tensors are copied) and 1 s per MB + 2 s (x5 under sanitizers).
"""
import json
import os
import resource
import shutil
import struct
import subprocess
import sys

STATEDICT, HF_SAVE, DATA, WORK = sys.argv[1:5]
LENET = os.path.join(DATA, "lenet.pt")
NOT_TENSORS = os.path.join(DATA, "checkpoint.tar")  # has an int `epoch`
INDEX = "pytorch_model.bin.index.json"
failures = []


def run(*args, timeout=60):
    return subprocess.run([str(a) for a in args], capture_output=True, text=True,
                          timeout=timeout)


def check(cond, what):
    if not cond:
        failures.append(what)
        print(f"FAIL: {what}")


shutil.rmtree(WORK, ignore_errors=True)
os.makedirs(WORK)
base = os.path.join(WORK, "base")
p = run(HF_SAVE, LENET, base, "bin", 5000)
check(p.returncode == 0, f"hf_save lenet: {p.stderr}")
with open(os.path.join(base, INDEX)) as f:
    base_index = json.load(f)
shards = sorted({v for v in base_index["weight_map"].values()})
check(len(shards) >= 3, f"lenet split into several shards: {shards}")
keys = [line.split()[0] for line in run(STATEDICT, "ls", LENET).stdout.splitlines()[:-1]]
first_key = next(iter(base_index["weight_map"]))
shard0 = base_index["weight_map"][first_key]
# a shard holding two keys or more: taking one of its keys away leaves it named by the index
multi = next(s for s in shards if list(base_index["weight_map"].values()).count(s) >= 2)
key_a = next(k for k, v in base_index["weight_map"].items() if v == multi)


def case(name, edit=None, text=None, files=None):
    """A copy of the base folder; edit(weight_map) changes the index, text replaces it."""
    d = os.path.join(WORK, name)
    shutil.copytree(base, d, symlinks=True)
    if edit or text is not None:
        if text is None:
            index = json.loads(json.dumps(base_index))
            edit(index)
            text = json.dumps(index, indent=2)
        with open(os.path.join(d, INDEX), "w") as f:
            f.write(text)
    if files:
        files(d)
    return d


def refused(d, *needles, target=None):
    target = target or os.path.join(d, INDEX)
    for cmd in (["ls"], ["dump", "--json"], ["convert"], ["verify"], ["scan"]):
        args = [STATEDICT, *cmd, target]
        if cmd == ["convert"]:
            args.append(os.path.join(WORK, "out.pt"))
        p = run(*args)
        expect = (1, 3) if cmd[0] in ("verify", "scan") else (3,)
        label = f"{os.path.basename(d)}: {' '.join(cmd)}"
        check(p.returncode in expect, f"{label} exit {p.returncode}, expected {expect}: {p.stderr}")
        msg = p.stderr + p.stdout
        check("Traceback" not in msg and "AddressSanitizer" not in msg and "runtime error" not in msg,
              f"{label}: crashed")
        for n in needles:
            check(n in msg, f"{label}: message names {n!r}: {msg.strip()}")


def setk(key, value):
    def f(index):
        index["weight_map"][key] = value
    return f


# ---- shard names that are not plain file names inside the folder ----
d = case("dotdot", setk(first_key, "../" + shard0),
         files=lambda d: shutil.copy(os.path.join(d, shard0), os.path.join(WORK, shard0)))
refused(d, f"weight_map[{first_key}] @ ", "'../" + shard0 + "' contains '/'")
absolute = os.path.abspath(os.path.join(base, shard0))
d = case("absolute", setk(first_key, absolute))
refused(d, f"weight_map[{first_key}]", "is an absolute path")
d = case("subdir", setk(first_key, "sub/" + shard0),
         files=lambda d: (os.mkdir(os.path.join(d, "sub")),
                          shutil.copy(os.path.join(d, shard0), os.path.join(d, "sub"))))
refused(d, f"weight_map[{first_key}]", "contains '/'")
for bad, why in ((".", "names a folder"), ("..", "names a folder"), ("", "is empty"),
                 ("x.index.json", "names an index")):
    d = case("name_" + (bad.replace(".", "dot") or "empty"), setk(first_key, bad))
    refused(d, f"weight_map[{first_key}]", why)


def link_out(d):
    outside = os.path.join(WORK, "outside.bin")
    shutil.copy(os.path.join(d, shard0), outside)
    os.symlink(os.path.relpath(outside, d), os.path.join(d, "link.bin"))


def relink(index):
    for k, v in index["weight_map"].items():
        if v == shard0:
            index["weight_map"][k] = "link.bin"


d = case("symlink_out", relink, files=link_out)
refused(d, "link.bin", "leaves the index's folder")
d = case("symlink_in", relink,
         files=lambda d: os.symlink(shard0, os.path.join(d, "link.bin")))
p = run(STATEDICT, "ls", d)
check(p.returncode == 0, f"a link to a shard inside the folder is read: {p.stderr}")
d = case("shard_dir", setk(first_key, "adir"), files=lambda d: os.mkdir(os.path.join(d, "adir")))
refused(d, f"weight_map[{first_key}]", "'adir' is not a regular file")

# ---- shards and keys ----
d = case("missing_shard", files=lambda d: os.remove(os.path.join(d, shard0)))
refused(d, shard0, "is missing")
d = case("key_missing", setk("ghost.weight", shard0))
refused(d, "weight_map[ghost.weight]", f"missing from its shard '{shard0}'")


def two_shards(index):
    index["weight_map"][key_a] = "extra.bin"


d = case("two_shards", two_shards,
         files=lambda d: shutil.copy(os.path.join(d, multi), os.path.join(d, "extra.bin")))
refused(d, "in two shards", multi, "extra.bin")


def absent(index):
    del index["weight_map"][key_a]


def second_name(index):
    for k in [k for k, v in index["weight_map"].items() if v == multi][1:]:
        index["weight_map"][k] = "alias.bin"


d = case("two_names_symlink", second_name,
         files=lambda d: os.symlink(multi, os.path.join(d, "alias.bin")))
refused(d, "is the same file as shard", "alias.bin", multi)
d = case("two_names_hardlink", second_name,
         files=lambda d: os.link(os.path.join(d, multi), os.path.join(d, "alias.bin")))
refused(d, "is the same file as shard", "alias.bin", multi)

d = case("absent", absent)
refused(d, key_a, "absent from the index", multi)
d = case("not_tensors", setk("epoch", "ckpt.bin"),
         files=lambda d: shutil.copy(NOT_TENSORS, os.path.join(d, "ckpt.bin")))
refused(d, "ckpt.bin", "not a dict of tensors")

# ---- the index's JSON ----
wm_text = json.dumps(base_index["weight_map"])
d = case("duplicate_key", text='{"weight_map": {"%s": "%s", %s' % (first_key, shard0, wm_text[1:]))
refused(d, "duplicate object key", first_key)
d = case("not_json", text='{"weight_map": {')
refused(d, "not valid JSON")
d = case("not_utf8", text='{"weight_map": {"\xff": "a"}}'.encode("latin-1").decode("latin-1"))
with open(os.path.join(d, INDEX), "wb") as f:
    f.write(b'{"weight_map": {"\xff": "a"}}')
refused(d, "not valid JSON")
d = case("array", text="[]")
refused(d, "not a JSON object")
d = case("no_weight_map", text='{"metadata": {}}')
refused(d, 'no "weight_map"')
d = case("weight_map_list", text='{"weight_map": []}')
refused(d, "not an object")
d = case("value_not_str", setk(first_key, 3))
refused(d, f"weight_map[{first_key}]", "not a JSON string")
d = case("metadata_list", lambda ix: ix.__setitem__("metadata", []))
refused(d, '"metadata" that is not an object')

# ---- folders ----
d = os.path.join(WORK, "empty_folder")
os.makedirs(d)
refused(d, "not a model folder", "model.safetensors", "pytorch_model.bin.index.json", target=d)
d = os.path.join(WORK, "folder_link_out")
os.makedirs(d)
shutil.copy(LENET, os.path.join(WORK, "outside.pt"))
os.symlink("../outside.pt", os.path.join(d, "pytorch_model.bin"))
refused(d, "pytorch_model.bin", "leaving the folder", target=d)

# ---- valid folders and indexes ----
order = list(base_index["weight_map"])
check(sorted(order) == sorted(keys), "the index lists lenet's keys")
for target in (base, os.path.join(base, INDEX)):
    p = run(STATEDICT, "ls", target)
    listed = [line.split()[0] for line in p.stdout.splitlines()[:-1]]
    check(p.returncode == 0 and listed == order, f"ls {target} in index order: {p.stderr}")
    check("format sharded" in p.stdout, "ls says format sharded")
    for cmd in ("verify", "scan"):
        p = run(STATEDICT, cmd, target)
        check(p.returncode == 0, f"{cmd} {target}: {p.stdout}{p.stderr}")
p = run(STATEDICT, "scan", base)
check(f"{shard0}:" in p.stdout, f"scan names the shard of each global: {p.stdout}")
out = os.path.join(WORK, "lenet_back.pt")
p = run(STATEDICT, "convert", base, out)
check(p.returncode == 0, f"convert folder: {p.stderr}")
p = run(STATEDICT, "diff", out, LENET)
check(p.returncode == 0, f"convert of the folder equals lenet.pt: {p.stdout}{p.stderr}")
p = run(STATEDICT, "diff", base, LENET)
check(p.returncode == 0, f"diff folder lenet.pt: {p.stdout}{p.stderr}")
single = os.path.join(WORK, "single")
run(HF_SAVE, LENET, single, "bin", 0)
check(sorted(os.listdir(single)) == ["pytorch_model.bin"], f"one file: {os.listdir(single)}")
p = run(STATEDICT, "ls", single)
check(p.returncode == 0 and "format zip" in p.stdout, f"single-file folder: {p.stderr}")

# writing a folder never writes through a link (a Hugging Face cache snapshot links into blobs/
# that other snapshots share): refused, the linked file unchanged
snap = os.path.join(WORK, "cache", "snapshots", "rev1")
blobs = os.path.join(WORK, "cache", "blobs")
os.makedirs(snap, exist_ok=True)
os.makedirs(blobs, exist_ok=True)
blob = os.path.join(blobs, "abc")
with open(blob, "wb") as f:
    f.write(b"shared blob")
os.symlink(os.path.join("..", "..", "blobs", "abc"), os.path.join(snap, "pytorch_model.bin"))
p = run(STATEDICT, "convert", "--format", "pt", LENET, snap)
check(p.returncode == 3 and "is a symbolic link" in p.stderr and "pytorch_model.bin" in p.stderr,
      f"convert into a folder whose file is a link: {p.returncode} {p.stderr}")
with open(blob, "rb") as f:
    check(f.read() == b"shared blob", "the linked blob is unchanged")
check(os.path.islink(os.path.join(snap, "pytorch_model.bin")), "the link stays a link")

# ---- cost: 20,000 shards of one tiny safetensors tensor each ----
many = os.path.join(WORK, "many_shards")
os.makedirs(many)
weight_map, total = {}, 0
for i in range(20000):
    name = f"s{i}.safetensors"
    hdr = json.dumps({f"t{i}": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}},
                     separators=(",", ":")).encode()
    hdr += b" " * (-(8 + len(hdr)) % 8)
    blob = struct.pack("<Q", len(hdr)) + hdr + b"\0\0\x80?"
    with open(os.path.join(many, name), "wb") as f:
        f.write(blob)
    weight_map[f"t{i}"] = name
    total += len(blob)
text = json.dumps({"metadata": {}, "weight_map": weight_map}).encode()
with open(os.path.join(many, "model.safetensors.index.json"), "wb") as f:
    f.write(text)
total += len(text)
sanitized = bool(os.environ.get("SDICT_SANITIZED"))
# CPU time (user + system) of the child, not wall time: a loaded machine must not fail the run
p = subprocess.run([sys.executable, "-c",
                    "import resource, subprocess, sys\n"
                    "r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL)\n"
                    "u = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
                    "print(r.returncode, u.ru_maxrss, u.ru_utime + u.ru_stime)",
                    STATEDICT, "ls", many], capture_output=True, text=True, timeout=600)
rc, rss_kb, cpu = p.stdout.split()
rc, rss_kb, cpu = int(rc), int(rss_kb), float(cpu)
mb = total / 2**20
check(rc == 0, f"ls of 20,000 tiny shards: exit {rc}")
check(cpu <= (mb + 2) * (5 if sanitized else 1), f"ls of 20,000 tiny shards took {cpu:.1f} s of CPU")
if not sanitized:
    check(rss_kb * 1024 <= 16 * total + 64 * 2**20,
          f"ls of 20,000 tiny shards ({total} bytes) peaked at {rss_kb} KB")
print(f"20,000 tiny shards ({mb:.1f} MB): ls {cpu:.1f} s CPU, peak RSS {rss_kb // 1024} MB")

print(f"{len(failures)} failures")
sys.exit(1 if failures else 0)
