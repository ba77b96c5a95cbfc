#!/usr/bin/python3
"""`statedict extract` against torch itself: whole pickled models (torch.save(model)) give
exactly model.state_dict().

usage: extract_check.py STATEDICT WORKDIR [FIXDIR]

For each model (torchvision resnet18 and mobilenet_v2; a model of ModuleDict and ModuleList; a
custom module with a non-persistent buffer, a None parameter and buffer, tied weights and a
BatchNorm; a DataParallel wrapper, built on the CPU; the zip layout, the legacy layout and
pickle protocols 1 and 4), torch.save(model) is extracted and the output, loaded with
torch.load(weights_only=True), must equal model.state_dict(): the same keys in the same order,
plain tensors (not Parameters, requires_grad False) of the same dtype, shape, stride and
values, the same storage sharing (tied weights one storage, nothing else shared), the same
_metadata (versions included); it must load into a fresh model with strict=True; and its bytes
must be those of torch.save(model.state_dict()) (torch 1.13's layout under 1.13, --layout 2.x
under 2.14; other generations write a layout statedict does not). A
YOLO-style checkpoint {'model': model.half(), 'epoch': 3, ...} extracts to the same dict with the
model replaced by its state_dict (and with --key model to the state_dict alone).

With FIXDIR (../shared/fixtures; skipped with a message when picklescan/ and modelscan/ are
absent), every malicious fixture under --inert: `ls --inert` and `extract` exit 0, 1 or 3
(never a signal), a refusal says why, and no file appears in the empty folder they run in;
`scan` lists every global of every pickle in file order, compared with the list Python's
pickletools (which parses and never executes) gives, with protocol 0-2 names renamed as
fix_imports renames them (_compat_pickle's tables).
Exits 77 when torch is unavailable.
"""
import _compat_pickle
import collections
import copy
import io
import os
import pickletools
import shutil
import subprocess
import sys
import tempfile
import zipfile

try:
    import torch
    import torch.nn as nn
    import torchvision
except ImportError as e:
    print("skip: %s" % e)
    sys.exit(77)

failures = []


def fail(msg):
    print("FAIL " + msg)
    failures.append(msg)


def run(cmd, cwd=None):
    r = subprocess.run(cmd, capture_output=True, cwd=cwd)
    return r.returncode, r.stdout.decode("utf-8", "replace"), r.stderr.decode("utf-8", "replace")


# ---- models -----------------------------------------------------------------------------------

class Dicts(nn.Module):
    """ModuleDict and ModuleList, a Sequential inside, BatchNorm (version 2) and InstanceNorm."""

    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList([nn.Linear(4, 4), nn.Sequential(nn.Linear(4, 3), nn.ReLU()),
                                     nn.BatchNorm1d(3)])
        self.heads = nn.ModuleDict({"a": nn.Linear(3, 2), "b": nn.InstanceNorm1d(3, affine=True,
                                                                                  track_running_stats=True)})


class Custom(nn.Module):
    """A non-persistent buffer, a None parameter and buffer, tied weights, a shared submodule."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 6)
        self.proj = nn.Linear(6, 10, bias=False)
        self.proj.weight = self.emb.weight  # tied
        self.register_buffer("scale", torch.tensor([2.0]))
        self.register_buffer("cache", torch.zeros(3), persistent=False)
        self.register_buffer("nothing", None)
        self.register_parameter("unused", None)
        self.extra = nn.Parameter(torch.randn(2, 3))
        self.bn = nn.BatchNorm2d(4)
        self.again = self.bn  # the same module under two names: torch lists it twice
        self.register_module("gone", None)  # a None submodule: skipped


def randomize(model):
    """Non-default values everywhere (buffers too), so a wrong mapping shows."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for t in list(model.parameters()) + list(model.buffers()):
            if t.is_floating_point():
                t.copy_(torch.randn(t.shape, generator=g).to(t.dtype))
            else:
                t.fill_(7)
    return model


def models():
    torch.manual_seed(0)
    out = [
        ("resnet18", lambda: torchvision.models.resnet18(), {}),
        ("mobilenet_v2", lambda: torchvision.models.mobilenet_v2(), {}),
        ("dicts", Dicts, {}),
        ("custom", Custom, {}),
        ("dataparallel", lambda: nn.DataParallel(Dicts()), {}),
        ("resnet18_legacy", lambda: torchvision.models.resnet18(),
         {"_use_new_zipfile_serialization": False}),
        ("custom_proto4", Custom, {"pickle_protocol": 4}),
        # protocol 1: copyreg._reconstructor(cls, object, None) + BUILD per module (torch
        # itself cannot load what protocol 0 makes of its persistent ids)
        ("dicts_proto1", Dicts, {"pickle_protocol": 1}),
        ("dicts_proto1_legacy", Dicts, {"pickle_protocol": 1,
                                        "_use_new_zipfile_serialization": False}),
    ]
    return out


# ---- comparisons ------------------------------------------------------------------------------

def sharing(sd):
    """key -> the set of keys whose tensor views the same storage at the same place."""
    by = collections.defaultdict(set)
    for k, t in sd.items():
        by[(t.untyped_storage().data_ptr() if hasattr(t, "untyped_storage")
            else t.storage().data_ptr(), t.storage_offset())].add(k)
    return {k: frozenset(s) for s in by.values() for k in s}


def compare_sd(label, got, ref):
    if list(got.keys()) != list(ref.keys()):
        fail("%s: keys differ: %s vs %s" % (label, list(got.keys())[:8], list(ref.keys())[:8]))
        return
    if type(got) is not collections.OrderedDict:
        fail("%s: result is a %s, not an OrderedDict" % (label, type(got).__name__))
    for k, r in ref.items():
        t = got[k]
        if type(t) is not torch.Tensor or t.requires_grad:
            fail("%s: %s is %s requires_grad=%s (want a plain tensor)" % (label, k, type(t).__name__,
                                                                          t.requires_grad))
        if t.dtype != r.dtype or t.shape != r.shape or t.stride() != r.stride():
            fail("%s: %s is %s %s %s, torch has %s %s %s" % (label, k, t.dtype, tuple(t.shape),
                                                           t.stride(), r.dtype, tuple(r.shape),
                                                           r.stride()))
        elif not torch.equal(t, r):
            fail("%s: %s values differ" % (label, k))
    if sharing(got) != sharing(ref):
        fail("%s: storage sharing differs" % label)
    gm, rm = getattr(got, "_metadata", None), getattr(ref, "_metadata", None)
    if gm is None or list(gm.items()) != list(rm.items()):
        fail("%s: _metadata differs:\n  got %s\n  ref %s" % (label, gm, rm))


def load(path):
    try:
        return torch.load(path, weights_only=True)
    except Exception:  # noqa: BLE001
        # torch 1.13's weights-only unpickler lacks BINFLOAT (a checkpoint's lr): the file is
        # statedict's own output, so the full unpickler may read it there
        if torch.__version__.startswith("1."):
            return torch.load(path)
        raise


def extract(sd_bin, src, dst, *extra):
    rc, out, err = run([sd_bin, "extract", *extra, src, dst])
    if rc != 0:
        fail("extract %s: exit %d: %s" % (src, rc, err.strip()))
        return False
    return True


def check_models(sd_bin, work):
    n = 0
    for name, make, save_kw in models():
        model = randomize(make())
        src, dst = os.path.join(work, name + ".pt"), os.path.join(work, name + "_sd.pt")
        torch.save(model, src, **save_kw)
        if not extract(sd_bin, src, dst):
            continue
        got, ref = load(dst), model.state_dict()
        compare_sd(name, got, ref)
        fresh = make()
        try:
            fresh.load_state_dict(got, strict=True)
            compare_sd(name + " (reloaded)", fresh.state_dict(), ref)
        except Exception as e:  # noqa: BLE001
            fail("%s: load_state_dict(strict=True): %s" % (name, e))
        # the file statedict wrote loads in torch as torch.save(model.state_dict()) does, and
        # is byte for byte that file in this torch's layout (same name: the archive folder)
        os.makedirs(os.path.join(work, "ref"), exist_ok=True)
        os.makedirs(os.path.join(work, "out"), exist_ok=True)
        ref_path = os.path.join(work, "ref", name + ".pt")
        torch.save(ref, ref_path)
        compare_sd(name + " (vs torch.save of state_dict)", got, load(ref_path))
        layout = (["--layout", "1.13"] if torch.__version__.startswith("1.") else
                  ["--layout", "2.x"] if torch.__version__.startswith("2.14") else None)
        if layout is None:
            print("note %s: torch %s's layout is not one statedict writes: bytes not compared"
                  % (name, torch.__version__))
        elif extract(sd_bin, src, os.path.join(work, "out", name + ".pt"), *layout):
            with open(ref_path, "rb") as a, open(os.path.join(work, "out", name + ".pt"), "rb") as b:
                if a.read() != b.read():
                    fail("%s: extract %s is not byte-identical to torch.save(model.state_dict())"
                         % (name, " ".join(layout)))
        n += 1
        print("ok %s: %d keys, %d _metadata entries" % (name, len(ref), len(ref._metadata)))

    # YOLO-style checkpoint: a dict holding a half-precision model, and other values
    model = randomize(torchvision.models.resnet18()).half()
    ckpt = {"epoch": 3, "best_fitness": None, "model": model, "ema": None, "updates": 12,
            "optimizer": None, "train_args": {"lr0": 0.01, "imgsz": 640}, "date": "2024-01-01"}
    src = os.path.join(work, "yolo.pt")
    torch.save(ckpt, src)
    dst = os.path.join(work, "yolo_out.pt")
    if extract(sd_bin, src, dst):
        got = load(dst)
        if list(got.keys()) != list(ckpt.keys()):
            fail("yolo: keys %s, want %s" % (list(got.keys()), list(ckpt.keys())))
        for k, v in ckpt.items():
            if k != "model" and got.get(k, object()) != v:
                fail("yolo: %s is %r, want %r" % (k, got.get(k), v))
        compare_sd("yolo.model", got["model"], model.state_dict())
        if got["model"]["conv1.weight"].dtype != torch.float16:
            fail("yolo: not half precision")
        fresh = torchvision.models.resnet18().half()
        try:
            fresh.load_state_dict(got["model"], strict=True)
        except Exception as e:  # noqa: BLE001
            fail("yolo: load_state_dict(strict=True): %s" % e)
        # bytes: the checkpoint torch writes with model.state_dict() in the model's place
        layout = (["--layout", "1.13"] if torch.__version__.startswith("1.") else
                  ["--layout", "2.x"] if torch.__version__.startswith("2.14") else None)
        ref_path, out_path = (os.path.join(work, d, "yolo.pt") for d in ("ref", "out"))
        torch.save(dict(ckpt, model=model.state_dict()), ref_path)
        if layout and extract(sd_bin, src, out_path, *layout):
            with open(ref_path, "rb") as a, open(out_path, "rb") as b:
                if a.read() != b.read():
                    fail("yolo: extract %s is not byte-identical to torch.save of the dict with "
                         "model.state_dict()" % " ".join(layout))
        n += 1
        print("ok yolo: %d keys besides the model" % (len(ckpt) - 1))
    dst = os.path.join(work, "yolo_key.pt")
    if extract(sd_bin, src, dst, "--key", "model"):
        compare_sd("yolo --key model", load(dst), model.state_dict())
        n += 1
    # ls --json and dump of inert objects follow the README's schema (tests/cli/check_schema.py)
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "cli"))
    import check_schema
    for name in ("custom", "dicts_proto1"):
        path = os.path.join(work, name + ".pt")
        for cmd, checker in (("ls", check_schema.check_listing), ("dump", check_schema.check_dump)):
            rc, out, err = run([sd_bin, cmd, "--json", "--inert", path])
            if rc != 0:
                fail("%s --inert %s: exit %d: %s" % (cmd, name, rc, err.strip()))
                continue
            checker(check_schema.json.loads(out), "%s --inert %s" % (cmd, name))
    for f in check_schema.failures:
        fail("schema: " + f)
    # diff --inert never calls two models equal without comparing them: the pair of objects is
    # "not compared", exit 1; diff of what extract wrote of each compares the tensors
    custom = os.path.join(work, "custom.pt")
    rc, out, err = run([sd_bin, "diff", "--inert", custom, custom])
    if rc != 1 or "not compared: <root>" not in out or "no differences" in out:
        fail("diff --inert of a model with itself: exit %d, %s" % (rc, out.strip()))
    # the normal loader refuses the whole-model file, naming the class and extract
    rc, _, err = run([sd_bin, "ls", src])
    if rc != 3 or "torchvision.models.resnet.ResNet" not in err or "statedict extract" not in err:
        fail("ls of a whole-model pickle: exit %d, %s" % (rc, err.strip()))
    return n


# ---- malicious fixtures -------------------------------------------------------------------------

def renamed(proto, mod, name):
    """(module, name) as CPython's find_class renames it with fix_imports (protocol < 3)."""
    if proto < 3:
        if (mod, name) in _compat_pickle.NAME_MAPPING:
            return _compat_pickle.NAME_MAPPING[(mod, name)]
        if mod in _compat_pickle.IMPORT_MAPPING:
            return _compat_pickle.IMPORT_MAPPING[mod], name
    return mod, name


def pickle_globals(data):
    """Every global the pickles in data reference, in order: GLOBAL and INST name it, STACK_GLOBAL
    takes the two strs below it (tracked through the memo). Successive pickles are read while
    the next one parses (a legacy file is several pickles, then raw storage bytes)."""
    out, pos = [], 0
    while pos < len(data):
        stack, memo, proto, start = [], {}, 0, pos
        try:
            for op, arg, p in pickletools.genops(io.BytesIO(data[pos:])):
                nm = op.name
                if nm == "PROTO":
                    proto = arg
                if nm in ("GLOBAL", "INST"):
                    out.append(renamed(proto, *arg.split(" ", 1)))
                    stack.append(None)
                elif nm == "STACK_GLOBAL":
                    name = stack.pop() if stack else None
                    mod = stack.pop() if stack else None
                    if isinstance(mod, str) and isinstance(name, str):
                        out.append(renamed(proto, mod, name))
                    stack.append(None)
                elif nm in ("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE",
                            "SHORT_BINSTRING", "BINSTRING", "STRING"):
                    stack.append(arg)
                elif nm in ("BINPUT", "LONG_BINPUT", "PUT"):
                    memo[arg] = stack[-1] if stack else None
                elif nm == "MEMOIZE":
                    memo[len(memo)] = stack[-1] if stack else None
                elif nm in ("BINGET", "LONG_BINGET", "GET"):
                    stack.append(memo.get(arg))
                elif nm == "STOP":
                    pos = start + p + 1
                    break
                else:
                    stack.append(None)  # anything else: not a str for STACK_GLOBAL
            else:
                break
        except Exception:  # noqa: BLE001  (the rest is not a pickle: storage bytes, garbage)
            break
        if pos == start:
            break
    return out


def file_globals(path):
    """[(record, [(module, name)...])] for a zip's .pkl records or a plain file."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(path) as z:
                return [(i.filename, pickle_globals(z.read(i)))
                        for i in z.infolist() if i.filename.endswith(".pkl")]
        except Exception:  # noqa: BLE001
            return None
    return [("", pickle_globals(data))]


def check_fixtures(sd_bin, fixdir, work):
    dirs = [os.path.join(fixdir, d) for d in ("picklescan", "modelscan")]
    if not all(os.path.isdir(d) for d in dirs):
        print("skip: malicious fixtures absent (%s)" % ", ".join(dirs))
        return 0
    n = 0
    for d in dirs:
        for fn in sorted(os.listdir(d)):
            path = os.path.join(d, fn)
            cwd = tempfile.mkdtemp(dir=work)
            out_pt = os.path.join(work, "fixture_out.pt")
            for cmd in (["ls", "--inert", path], ["dump", "--inert", path],
                        ["extract", path, out_pt]):
                rc, out, err = run([sd_bin] + cmd, cwd=cwd)
                if rc not in (0, 1, 3):
                    fail("%s %s: exit %d (a crash?): %s" % (cmd[0], fn, rc, err.strip()[:300]))
                elif rc == 3 and (fn not in err or "statedict:" not in err):
                    fail("%s %s: refused without saying which file and why: %s" %
                         (cmd[0], fn, err.strip()[:300]))
            if os.listdir(cwd):
                fail("%s: files appeared: %s" % (fn, os.listdir(cwd)))
            shutil.rmtree(cwd)
            # scan lists every global, as pickletools reads them
            want = file_globals(path)
            rc, out, err = run([sd_bin, "scan", path])
            got = []
            for line in out.splitlines():
                parts = line.split()
                if len(parts) >= 3 and parts[0] in ("ALLOWED", "REFUSED"):
                    got.append(parts[1])
            if want is None:
                print("note %s: not a zip Python reads; scan exit %d" % (fn, rc))
            else:
                flat = ["%s.%s" % g for _, gl in want for g in gl]
                if rc not in (0, 1) or got != flat:
                    # a pickle that ends in an error: the scan must say it is incomplete,
                    # and list what it read up to there
                    incomplete = rc == 3 and got == flat[:len(got)]
                    if not incomplete or "incomplete" not in (out + err):
                        fail("scan %s: exit %d, %d globals %s, pickletools %d %s; %s" %
                             (fn, rc, len(got), got[:6], len(flat), flat[:6], err.strip()[:200]))
                    else:
                        print("note %s: scan incomplete after %d of %d globals: %s" %
                              (fn, len(got), len(flat), err.strip()[:160]))
            n += 1
            print("ok fixture %s: %d globals" % (fn, len(got)))
    return n


class SetSub(set):
    pass


class DictSub(dict):
    pass


class WithExtra(torch.nn.Linear):
    def get_extra_state(self):
        return {"x": 1}

    def set_extra_state(self, state):
        pass


def check_refusals(sd_bin, work):
    """Models whose state_dict Python code computes, or whose module dicts are subclasses:
    extract equals torch's state_dict or exits 3 naming the cause, never a different result."""
    n = 0
    cases = []
    q = torch.ao.nn.quantized.Linear(3, 2)
    cases.append(("quantized_linear", torch.nn.Sequential(q), "_save_to_state_dict"))
    cases.append(("quantized_dynamic", torch.nn.Sequential(
        torch.ao.nn.quantized.dynamic.Linear(3, 2)), "_save_to_state_dict"))
    m = torch.nn.BatchNorm1d(3)
    m.register_buffer("extra", torch.ones(2), persistent=False)
    m._non_persistent_buffers_set = SetSub(m._non_persistent_buffers_set)
    cases.append(("nonpersist_setsub", m, "_non_persistent_buffers_set"))
    m = torch.nn.Sequential(torch.nn.Linear(2, 2))
    m._modules = DictSub(m._modules)
    cases.append(("modules_dictsub", m, "dict subclass"))
    m = torch.nn.BatchNorm1d(3)
    m.register_buffer("extra", torch.ones(2), persistent=False)
    m._non_persistent_buffers_set = list(m._non_persistent_buffers_set)
    cases.append(("nonpersist_list", m, None))
    # Python code statedict does not run: named on stderr, the result is Module's own
    m = torch.nn.Sequential(WithExtra(2, 2))
    src = os.path.join(work, "extra_state.pt")
    torch.save(m, src)
    rc, _, err = run([sd_bin, "extract", src, os.path.join(work, "extra_state_sd.pt")])
    if rc != 0 or "WithExtra is not a torch class" not in err or "get_extra_state" not in err:
        fail("extra_state: exit %d, no warning naming WithExtra: %r" % (rc, err))
    else:
        got = load(os.path.join(work, "extra_state_sd.pt"))
        if list(got) != ["0.weight", "0.bias"]:
            fail("extra_state: keys %s" % list(got))
        print("ok extra_state: warned, Module.state_dict's keys")
    for name, model, want in cases:
        src, dst = os.path.join(work, name + ".pt"), os.path.join(work, name + "_sd.pt")
        torch.save(model, src)
        rc, _, err = run([sd_bin, "extract", src, dst])
        if want is None:
            if rc != 0:
                fail("%s: extract exit %d: %s" % (name, rc, err.strip()))
            else:
                compare_sd(name, load(dst), model.state_dict())
                print("ok %s: equals torch's state_dict" % name)
        elif rc != 3 or want not in err or os.path.exists(dst):
            fail("%s: exit %d, expected 3 and %r in %r" % (name, rc, want, err))
        else:
            print("ok %s refused: %s" % (name, err.strip().splitlines()[-1][:160]))
        n += 1
    return n


def main():
    if len(sys.argv) < 3:
        print(__doc__)
        return 2
    sd_bin, work = sys.argv[1], sys.argv[2]
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    n = check_models(sd_bin, work)
    n += check_refusals(sd_bin, work)
    if len(sys.argv) > 3:
        n += check_fixtures(sd_bin, sys.argv[3], work)
    print("%d checks, %d failures (torch %s, torchvision %s)" % (n, len(failures),
                                                                  torch.__version__,
                                                                  torchvision.__version__))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
