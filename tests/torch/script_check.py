#!/usr/bin/python3
"""`statedict extract` of TorchScript archives against torch itself: the extracted state_dict
equals torch.jit.load(f).state_dict().

usage: script_check.py models STATEDICT WORKDIR
       script_check.py fixtures STATEDICT WORKDIR FIXDIR

models: torch.jit.script and torch.jit.trace of torchvision resnet18 and of a module with
buffers (a persistent and a non-persistent one, a plain tensor attribute, a ModuleList with a
BatchNorm, tied weights), saved with torch.jit.save by this torch; each is extracted (to torch
zip, and the buffer module to safetensors too) and must equal torch.jit.load(f).state_dict():
the same keys in the same order, plain tensors of the same dtype, shape and values, tied
weights one storage and nothing else shared, the same _metadata. `ls` of an archive exits 3
saying TorchScript and naming `statedict extract`; `ls --inert` lists it. Hostile archives
made from a real one (code naming a missing attribute, a parameter that is no tensor, an
object of no module class, a missing storage record, an oversized record, a code record of
400,000 declarations) give exit 3 with a message saying what is wrong, in bounded time.
fixtures: each TorchScript fixture of FIXDIR (SOURCES.md) against torch.jit.load(f)
.state_dict() computed here (skipped, saying so, when FIXDIR is absent).
Exits 77 when torch is unavailable.
"""
import io
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile

try:
    import torch
    import torch.nn as nn
except ImportError as e:
    print("skip: %s" % e)
    sys.exit(77)

failures = []


def fail(msg):
    print("FAIL " + msg)
    failures.append(msg)


def run(cmd):
    r = subprocess.run(cmd, capture_output=True)
    return r.returncode, r.stdout.decode("utf-8", "replace"), r.stderr.decode("utf-8", "replace")


def load_out(path):
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file
        return load_file(path)
    kw = {"weights_only": True} if "weights_only" in torch.load.__code__.co_varnames else {}
    return torch.load(path, map_location="cpu", **kw)


def compare(name, got, want, check_meta=True):
    if list(got.keys()) != list(want.keys()):
        fail("%s: keys %s != torch's %s" % (name, list(got.keys())[:12], list(want.keys())[:12]))
        return
    for k in want:
        a, b = got[k], want[k]
        if type(a) is not torch.Tensor or a.requires_grad:
            fail("%s: %s is a %s (requires_grad %s), not a plain tensor" % (name, k, type(a),
                                                                           a.requires_grad))
        if a.dtype != b.dtype or a.shape != b.shape:
            fail("%s: %s is %s%s, torch has %s%s" % (name, k, a.dtype, tuple(a.shape), b.dtype,
                                                     tuple(b.shape)))
        elif not torch.equal(a, b):
            fail("%s: %s values differ" % (name, k))
    if check_meta:
        gm = getattr(got, "_metadata", None)
        wm = getattr(want, "_metadata", None)
        if gm != wm:
            fail("%s: _metadata %s != torch's %s" % (name, gm, wm))
        # sharing: the same groups of keys share a storage
        def groups(sd):
            g = {}
            for k, v in sd.items():
                g.setdefault((v.untyped_storage().data_ptr() if hasattr(v, "untyped_storage")
                              else v.storage().data_ptr()), []).append(k)
            return sorted(sorted(x) for x in g.values() if len(x) > 1)
        if groups(got) != groups(want):
            fail("%s: shared storages %s, torch has %s" % (name, groups(got), groups(want)))


def have_safetensors():
    try:
        import safetensors.torch  # noqa: F401
        return True
    except ImportError:
        return False


def check_file(exe, work, path, name, fmts=("pt",)):
    want = torch.jit.load(path, map_location="cpu").state_dict()
    for fmt in fmts:
        out = os.path.join(work, name + ".out." + ("safetensors" if fmt == "st" else "pt"))
        rc, _, err = run([exe, "extract", path, out])
        if rc != 0:
            fail("%s: extract exit %d: %s" % (name, rc, err.strip()))
            continue
        got = load_out(out)
        if fmt == "st":
            # safetensors: no order and no sharing; of tied weights one name is written
            # (convert's rule, as safetensors' save_model), the others named on stderr
            ptr = lambda t: t.untyped_storage().data_ptr()
            missing = [k for k in want if k not in got]
            if any(k not in want for k in got) or any(
                    not any(ptr(want[k]) == ptr(want[g]) for g in got) or k not in err
                    for k in missing):
                fail("%s[st]: keys %s, torch %s" % (name, sorted(got), list(want)))
            got = {k: got[k] for k in want if k in got}
            compare(name + "[st]", got, {k: want[k] for k in got}, check_meta=False)
            continue
        compare(name + "[" + fmt + "]", got, want)
    print("ok %s: %d keys" % (name, len(want)))


class Buffers(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 2)
        self.register_buffer("pers", torch.arange(4.0))
        self.register_buffer("nonp", torch.ones(2, dtype=torch.int64), persistent=False)
        self.layers = nn.ModuleList([nn.Linear(2, 2), nn.BatchNorm1d(2)])
        self.dec = nn.Linear(3, 2, bias=False)
        self.dec.weight = self.lin.weight  # tied
        self.c = torch.tensor([5.0, 6.0])  # a plain attribute: not in the state_dict
        self.register_buffer("h16", torch.randn(2).half())

    def forward(self, x):
        y = self.lin(x) + self.c + self.dec(x)
        for layer in self.layers:
            y = layer(y)
        return y + self.pers[:2] + self.nonp + self.h16.float()


def models(exe, work):
    import torchvision
    torch.manual_seed(0)
    b = Buffers().eval()
    with torch.no_grad():
        b.layers[1].running_mean.uniform_()
    files = {}
    files["buffers_script"] = torch.jit.script(b)
    files["buffers_trace"] = torch.jit.trace(b, torch.randn(4, 3))
    r = torchvision.models.resnet18().eval()
    files["resnet18_script"] = torch.jit.script(r)
    files["resnet18_trace"] = torch.jit.trace(r, torch.randn(1, 3, 64, 64))
    for name, m in files.items():
        p = os.path.join(work, name + ".pt")
        torch.jit.save(m, p)
        st = name.startswith("buffers") and have_safetensors()
        check_file(exe, work, p, name, ("pt", "st") if st else ("pt",))

    # normal commands refuse, pointing at extract; --inert lists the objects
    p = os.path.join(work, "buffers_script.pt")
    rc, _, err = run([exe, "ls", p])
    if rc != 3 or "TorchScript" not in err or "statedict extract" not in err:
        fail("ls of a TorchScript archive: exit %d, %r" % (rc, err))
    rc, out, err = run([exe, "ls", "--inert", p])
    if rc != 0 or "TorchScript" not in out + err:
        fail("ls --inert of a TorchScript archive: exit %d, %r %r" % (rc, out[:300], err))

    hostile(exe, work, p)


def rewrite(src, dst, edit):
    """Copies archive src to dst with edit(name, bytes) -> bytes or None (dropped)."""
    with zipfile.ZipFile(src) as zi, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zo:
        for info in zi.infolist():
            data = edit(info.filename, zi.read(info.filename))
            if data is not None:
                zo.writestr(info.filename, data)


def hostile(exe, work, base):
    def code_of(name):
        return name.endswith("code/__torch__/torch/nn/modules/linear.py")

    cases = [
        ("missing_attribute", lambda n, d: d.replace(b'__parameters__ = ["weight", "bias", ]',
                                                     b'__parameters__ = ["weight", "nothere", ]')
         if code_of(n) else d, "missing attribute"),
        ("param_not_tensor", lambda n, d: d.replace(b'__parameters__ = ["weight", "bias", ]',
                                                    b'__parameters__ = ["weight", "bias", '
                                                    b'"training", ]')
         if code_of(n) else d, "not a tensor"),
        ("not_a_module", lambda n, d: d.replace(b"(Module):", b"(Object):")
         if code_of(n) else d, "no Module class"),
        ("missing_record", lambda n, d: None if n.endswith("/data/0") else d, "missing"),
        ("oversized_record", lambda n, d: d + b"\0" * 64 if n.endswith("/data/1") else d,
         "bytes"),
        ("bad_name_list", lambda n, d: d.replace(b'__parameters__ = ["weight", "bias", ]',
                                                 b'__parameters__ = ["weight" "bias"]')
         if code_of(n) else d, "TorchScript code"),
    ]
    for name, edit, want in cases:
        p = os.path.join(work, "hostile_" + name + ".pt")
        rewrite(base, p, edit)
        rc, _, err = run([exe, "extract", p, os.path.join(work, "hostile.out.pt")])
        if rc != 3 or want not in err or "Traceback" in err:
            fail("hostile %s: exit %d, expected 3 and %r in %r" % (name, rc, want, err))
        else:
            print("ok hostile %s: %s" % (name, err.strip().splitlines()[-1][:160]))
    textual(exe, work)
    # a huge code record: 400,000 declarations in one class, read in linear time
    big = b"class Big(Module):\n  __parameters__ = []\n" + b"".join(
        b"  a%d : Tensor\n" % i for i in range(400000))
    p = os.path.join(work, "hostile_big_code.pt")
    rewrite(base, p, lambda n, d: d + b"\n" + big if code_of(n) else d)
    t = time.time()
    rc, _, err = run([exe, "extract", p, os.path.join(work, "hostile.out.pt")])
    dt = time.time() - t
    if rc != 0 or dt > 20:
        fail("huge code record: exit %d in %.1f s: %s" % (rc, dt, err))
    else:
        print("ok huge code record (%d bytes): %.2f s" % (len(big), dt))


class TxtSub(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([2.0]))

    def forward(self, x):
        return x * self.w


class TxtTop(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Parameter(torch.tensor([3.0]))
        self.register_buffer("bb", torch.tensor([1.0]))
        self.t = torch.tensor([5.0])
        self.sub = TxtSub()

    def forward(self, x):
        return self.sub(x) * self.a + self.bb + self.t


def textual(exe, work):
    """Code text torch's parser reads one way: statedict reads it the same way, or refuses it
    (issue 13 adversarial review): the extracted state_dict always equals torch.jit.load's."""
    base = os.path.join(work, "txt_base.pt")
    torch.jit.save(torch.jit.script(TxtTop()), base)
    with zipfile.ZipFile(base) as z:
        top = [n for n in z.namelist() if n.endswith("code/__torch__/___torch_mangle_0.py")
               or n.endswith("code/__torch__.py")]
        code = z.read(top[0]).decode()
    sub = [l for l in code.split("\n") if l.strip().startswith("sub : ")][0].strip()
    par = [l for l in code.split("\n") if l.strip().startswith('__parameters__ = ["a"')][0]
    ret = [l for l in code.split("\n") if l.strip().startswith("return ")][0]
    ind = lambda c: "\n".join(("  " + l if l.startswith("  ") else l) for l in c.split("\n"))
    same = [  # torch reads these as the original
        ("nospace_colon", lambda c: c.replace(sub, sub.replace(" : ", ": "))),
        ("trailing_comment", lambda c: c.replace(sub, sub + " # x")),
        ("params_nospace", lambda c: c.replace(par.strip(), par.strip().replace(" = ", "="))),
        ("comment_col0", lambda c: c.replace(par, "# hi\n" + par)),
        ("comment_col0_sub", lambda c: c.replace("  " + sub, "# hi\n  " + sub)),
        ("indent4", ind),
        ("fake_in_string", lambda c: c.replace(par + "\n", "").replace(
            ret, ret[:len(ret) - len(ret.lstrip())] + '_s = """\n' + par + '\n"""\n' + ret)),
    ]
    refused = [  # torch.jit.load refuses these: statedict too
        ("tab", lambda c: c.replace("\n  " + sub, "\n\t" + sub), "tab"),
        ("semicolon", lambda c: c.replace("  " + sub, "  t2 : Tensor; " + sub), "type"),
        ("buffer_optional", lambda c: c.replace("  bb : Tensor", "  bb : Optional[Tensor]"),
         "Optional"),
    ]
    for name, edit, *want in same + refused:
        p = os.path.join(work, "txt_" + name + ".pt")
        rewrite(base, p, lambda n, d: edit(d.decode()).encode() if n in top else d)
        if not want:
            check_file(exe, work, p, "txt_" + name)
            continue
        try:
            torch.jit.load(p)
            fail("txt %s: torch.jit.load accepts it" % name)
        except Exception:
            pass
        rc, _, err = run([exe, "extract", p, os.path.join(work, "txt.out.pt")])
        if rc != 3 or want[0] not in err:
            fail("txt %s: exit %d, expected 3 and %r in %r" % (name, rc, want[0], err))
        else:
            print("ok txt %s refused: %s" % (name, err.strip().splitlines()[-1][:160]))
    # a module object in an attribute the code does not declare: refused, not dropped
    p = os.path.join(work, "txt_undeclared.pt")
    rewrite(base, p, lambda n, d: d.decode().replace("  " + sub + "\n", "").encode()
            if n in top else d)
    rc, _, err = run([exe, "extract", p, os.path.join(work, "txt.out.pt")])
    if rc != 3 or "does not declare" not in err:
        fail("txt undeclared module: exit %d, %r" % (rc, err))
    else:
        print("ok txt undeclared module refused")
    # 190,000 class lines in a record with a 4 KB name: refused within a linear memory budget
    big = b"".join(b"class c%d:\n" % i for i in range(190000))
    p = os.path.join(work, "txt_amp.pt")
    with zipfile.ZipFile(base) as zi, zipfile.ZipFile(p, "w", zipfile.ZIP_DEFLATED) as zo:
        for info in zi.infolist():
            zo.writestr(info.filename, zi.read(info.filename))
        zo.writestr(top[0].replace("__torch__.py", "__torch__/" + "m" * 4000 + ".py"), big)
    t = time.time()
    rc, _, err = run([exe, "extract", p, os.path.join(work, "txt.out.pt")])
    if rc != 3 or "bytes" not in err or time.time() - t > 20:
        fail("txt amp: exit %d in %.1f s: %r" % (rc, time.time() - t, err))
    else:
        print("ok txt amp refused: %s" % err.strip().splitlines()[-1][:160])


FIXTURES = ["coremltools/DemoNet.pt", "tch-rs/foo.pt", "tch-rs/foo1.pt", "tch-rs/foo9.pt",
            "silero-vad/silero_vad.jit", "serve/dummy.pt", "djl/identity.pt", "djl/deepar.pt"]


def fixtures(exe, work, fixdir):
    if not os.path.isdir(fixdir):
        print("skip: no fixture folder %s" % fixdir)
        sys.exit(77)
    n = 0
    for rel in FIXTURES:
        p = os.path.join(fixdir, rel)
        if not os.path.exists(p):
            print("skip %s: absent" % rel)
            continue
        check_file(exe, work, p, rel.replace("/", "_"))
        n += 1
    if n == 0:
        print("skip: none of the TorchScript fixtures is present")
        sys.exit(77)


def main():
    mode, exe, work = sys.argv[1], sys.argv[2], sys.argv[3]
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    t = time.time()
    if mode == "models":
        models(exe, work)
    else:
        fixtures(exe, work, sys.argv[4])
    print("%s: %d failure(s), %.1f s" % (mode, len(failures), time.time() - t))
    sys.exit(1 if failures else 0)


main()
