#!/usr/bin/python3
"""The CLI over safetensors files and model folders: ls (one and several files, metadata lines,
the format name), ls --json / dump --json (the "metadata" member), show --metadata, diff across
formats (a .pt against a safetensors file and against a folder: no differences; metadata
changes reported), verify and scan of a folder.

usage: check_formats.py STATEDICT DIR

The safetensors files and the index are written here by hand (struct + json, as safetensors'
serialize writes them: u64 header length, JSON header padded with spaces to 8 bytes, data); the
.pt holding the same tensors with torch. A part whose input the library cannot read yet (a
branch without the safetensors reader or the folder loader: the library then says "this is a
safetensors file, not a PyTorch checkpoint", "Is a directory" or "not yet built") is skipped,
saying so; exit 77 when every part was skipped, 1 on any failure, 0 otherwise.
"""
import json
import os
import shutil
import struct
import subprocess
import sys

failures = []


def check(cond, msg):
    if not cond:
        failures.append(msg)
        print("FAIL:", msg)


def write_safetensors(path, tensors, metadata=None):
    """tensors: list of (name, dtype, shape, raw bytes), in data order."""
    header, off = {}, 0
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dt, shape, raw in tensors:
        header[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [off, off + len(raw)]}
        off += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(t[3] for t in tensors))


def run(bin_, *args):
    p = subprocess.run([bin_] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=300)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


NOT_BUILT = ("this is a safetensors file, not a PyTorch checkpoint", "Is a directory",
             "not yet built", "not a PyTorch checkpoint (first bytes 7b")


def readable(bin_, path):
    rc, out, err = run(bin_, "ls", path)
    if rc == 3 and any(m in err for m in NOT_BUILT):
        print("skip: the library cannot read %s yet: %s" % (os.path.basename(path), err.strip()))
        return False
    return True


def main(argv):
    bin_, d = argv[1], argv[2]
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    import torch

    a = torch.arange(6, dtype=torch.float32).reshape(2, 3) / 7
    b = torch.tensor([1, -2, 2 ** 40], dtype=torch.int64)
    c = torch.tensor([0.5, -1.25], dtype=torch.float16)
    raw = lambda t: t.contiguous().numpy().tobytes()
    tens = [("a", "F32", a.shape, raw(a)), ("b", "I64", b.shape, raw(b)),
            ("c", "F16", c.shape, raw(c))]
    md = {"format": "pt", "note": "two words", "\u00e9t\u00e9": "ok"}
    pt = os.path.join(d, "model.pt")
    torch.save({"a": a, "b": b, "c": c}, pt)
    st = os.path.join(d, "model.safetensors")
    write_safetensors(st, tens, md)
    st2 = os.path.join(d, "changed.safetensors")
    write_safetensors(st2, tens, {"format": "pt", "note": "other", "extra": "1"})
    a2 = a.clone()
    a2[1, 2] += 1
    st3 = os.path.join(d, "values.safetensors")
    write_safetensors(st3, [("a", "F32", a.shape, raw(a2))] + tens[1:], md)

    ran = 0
    if readable(bin_, st):
        ran += 1
        rc, out, err = run(bin_, "ls", st)
        lines = out.splitlines()
        check(rc == 0, "ls safetensors: exit %d %s" % (rc, err))
        summary = [i for i, l in enumerate(lines) if " tensors, " in l or " tensor, " in l]
        check(len(summary) == 1 and "format safetensors" in lines[summary[0]],
              "ls safetensors: summary names the format: %r" % out)
        want = ["metadata 'format': 'pt'", "metadata 'note': 'two words'",
                "metadata '\u00e9t\u00e9': 'ok'"]
        check(summary and lines[summary[0] + 1:] == want,
              "ls safetensors: metadata lines after the summary: %r" % lines)
        check([l.split()[0] for l in lines[:3]] == ["a", "b", "c"], "ls safetensors keys: %r" % lines)
        rc, out, err = run(bin_, "ls", "--json", st)
        doc = json.loads(out) if rc == 0 else {}
        check(doc.get("format") == "safetensors" and doc.get("metadata") == md,
              "ls --json safetensors: format/metadata %r %r" % (doc.get("format"), doc.get("metadata")))
        rc, out, err = run(bin_, "dump", "--json", st)
        dst = json.loads(out) if rc == 0 else {}
        check(dst.get("metadata") == md, "dump --json metadata: %r" % dst.get("metadata"))
        rc, out, err = run(bin_, "dump", "--json", pt)
        dpt = json.loads(out)
        check(dpt.get("metadata") is None, "dump --json of a .pt: metadata null")
        sha = lambda doc: [(k["value"], v.get("sha256")) for k, v in doc["root"]["items"]]
        check(dst and sha(dst) == sha(dpt), "dump: the same tensors hash alike across formats")
        rc, out, err = run(bin_, "show", "--metadata", st)
        check(rc == 0 and out.splitlines() == ["format: str  'pt'", "note: str  'two words'",
                                               "\u00e9t\u00e9: str  'ok'"],
              "show --metadata: %r %r" % (out, err))
        rc, out, err = run(bin_, "show", "--metadata", st, "note")
        check(rc == 0 and out == "note: str  'two words'\n", "show --metadata KEY: %r" % out)
        rc, out, err = run(bin_, "show", "--metadata", st, "nope")
        check(rc == 1 and "no metadata key 'nope'" in err, "show --metadata missing key: %d %r" % (rc, err))
        rc, out, err = run(bin_, "show", "--metadata", pt)
        check(rc == 0 and out == "", "show --metadata of a .pt prints nothing: %d %r" % (rc, out))
        # convert to .pt says the metadata is not kept (a torch file has no place for it)
        back = os.path.join(d, "back.pt")
        rc, out, err = run(bin_, "convert", st, back)
        check(rc == 0 and "metadata (3 entries) is not kept" in err,
              "convert safetensors -> .pt warns of the metadata: %d %r" % (rc, err))
        # diff across formats: the format and the metadata a .pt lacks are no difference
        rc, out, err = run(bin_, "diff", pt, st)
        check(rc == 0 and out == "no differences\n", "diff .pt safetensors: %d %r %r" % (rc, out, err))
        rc, out, err = run(bin_, "diff", st, pt)
        check(rc == 0, "diff safetensors .pt: %d %r" % (rc, out))
        # a nested checkpoint against its flat safetensors conversion: leaves matched by the
        # dotted key, so only the leaf that is not a tensor is reported
        nested = os.path.join(d, "nested.pt")
        torch.save({"epoch": 3, "model": {"a": a, "b": b}, "c": c}, nested)
        flat = os.path.join(d, "flat.safetensors")
        write_safetensors(flat, [("model.a", "F32", a.shape, raw(a)),
                                 ("model.b", "I64", b.shape, raw(b)), ("c", "F16", c.shape, raw(c))])
        rc, out, err = run(bin_, "diff", nested, flat)
        check(rc == 1 and out.splitlines() == ["only in A: epoch  int 3", "1 difference"],
              "diff nested .pt vs flat safetensors: %d %r %r" % (rc, out, err))
        rc, out, err = run(bin_, "diff", flat, nested)
        check(rc == 1 and out.splitlines() == ["only in B: epoch  int 3", "1 difference"],
              "diff flat safetensors vs nested .pt: %d %r %r" % (rc, out, err))
        # an empty dict converts to an empty safetensors file (as save_file({}) writes one)
        empty_pt, empty_st = os.path.join(d, "empty.pt"), os.path.join(d, "empty.safetensors")
        torch.save({}, empty_pt)
        rc, out, err = run(bin_, "convert", empty_pt, empty_st)
        rc2, out2, _ = run(bin_, "ls", empty_st)
        check(rc == 0 and rc2 == 0 and "0 tensors" in out2, "empty dict to safetensors: %d %r %r" % (rc, err, out2))
        # a folder written over one of the other layout: warned that readers pick the old file
        fold = os.path.join(d, "fold")
        rc1, _, _ = run(bin_, "convert", pt, fold + "/")
        rc, out, err = run(bin_, "convert", "--format", "pt", pt, fold)
        check(rc1 == 0 and rc == 0 and "also holds model.safetensors" in err,
              "convert --format pt over a safetensors folder warns: %d %d %r" % (rc1, rc, err))
        rc, out, err = run(bin_, "convert", pt, fold)
        check(rc == 0 and err == "", "convert into the layout readers pick: no warning: %r" % err)
        # between torch files, a key "model.a" and a nested model -> a stay apart
        dotted = os.path.join(d, "dotted.pt")
        torch.save({"epoch": 3, "model.a": a, "model.b": b, "c": c}, dotted)
        rc, out, err = run(bin_, "diff", nested, dotted)
        check(rc == 1 and "only in A: model.a  float32 [2, 3]" in out and
              "only in B: model.a  float32 [2, 3]" in out, "diff nested vs dotted .pt: %d %r" % (rc, out))
        rc, out, err = run(bin_, "diff", pt, st3)
        check(rc == 1 and out.startswith("values: a  1 of 6 elements differ"),
              "diff .pt vs changed values: %d %r" % (rc, out))
        rc, out, err = run(bin_, "diff", st, st2)
        check(rc == 1 and out.splitlines() == [
            "metadata: 'note'  'two words' -> 'other'", "metadata only in A: '\u00e9t\u00e9'  'ok'",
            "metadata only in B: 'extra'  '1'", "3 differences"],
            "diff metadata: %d %r" % (rc, out))
        # several files, formats mixed
        rc, out, err = run(bin_, "ls", pt, st)
        check(rc == 0 and out.count("==> ") == 2 and "format zip" in out
              and "format safetensors" in out, "ls .pt and safetensors: %r" % out)

    # a model folder: two shards and their index
    folder = os.path.join(d, "folder")
    os.makedirs(folder)
    write_safetensors(os.path.join(folder, "model-00001-of-00002.safetensors"), tens[:2], md)
    write_safetensors(os.path.join(folder, "model-00002-of-00002.safetensors"), tens[2:], md)
    total = sum(len(t[3]) for t in tens)
    with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total},
                   "weight_map": {"a": "model-00001-of-00002.safetensors",
                                  "b": "model-00001-of-00002.safetensors",
                                  "c": "model-00002-of-00002.safetensors"}}, f)
    index = os.path.join(folder, "model.safetensors.index.json")
    if readable(bin_, folder):
        ran += 1
        for p in (folder, folder + "/", index):
            rc, out, err = run(bin_, "ls", p)
            check(rc == 0 and "format sharded" in out and [l.split()[0] for l in out.splitlines()[:3]]
                  == ["a", "b", "c"], "ls %s: %d %r %r" % (p, rc, out, err))
            rc, out, err = run(bin_, "diff", pt, p)
            check(rc == 0 and out == "no differences\n", "diff .pt %s: %d %r %r" % (p, rc, out, err))
            rc, out, err = run(bin_, "show", p, "a")
            check(rc == 0 and "tensor(" in out, "show %s a: %d %r" % (p, rc, err))
            rc, out, err = run(bin_, "dump", "--json", p)
            check(rc == 0 and json.loads(out)["format"] == "sharded", "dump %s: %d %r" % (p, rc, err))
        rc, out, err = run(bin_, "ls", "--json", pt, folder)
        files = json.loads(out)["files"] if rc == 0 else []
        check([f.get("format") for f in files] == ["zip", "sharded"], "ls --json .pt folder: %r" % out[:300])
        for cmd in ("verify", "scan"):
            for p in (folder, index):
                rc, out, err = run(bin_, cmd, p)
                check(rc == 0, "%s %s: %d %r %r" % (cmd, p, rc, out, err))
    # a folder of .bin shards (torch zip files) and pytorch_model.bin.index.json
    binf = os.path.join(d, "binfolder")
    os.makedirs(binf)
    torch.save({"a": a, "b": b}, os.path.join(binf, "pytorch_model-00001-of-00002.bin"))
    torch.save({"c": c}, os.path.join(binf, "pytorch_model-00002-of-00002.bin"))
    with open(os.path.join(binf, "pytorch_model.bin.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total, "note": "bin"},
                   "weight_map": {"a": "pytorch_model-00001-of-00002.bin",
                                  "b": "pytorch_model-00001-of-00002.bin",
                                  "c": "pytorch_model-00002-of-00002.bin"}}, f)
    if readable(bin_, binf):
        ran += 1
        bindex = os.path.join(binf, "pytorch_model.bin.index.json")
        for p in (binf, bindex):
            rc, out, err = run(bin_, "ls", p)
            lines = out.splitlines()
            check(rc == 0 and "format sharded" in out and [l.split()[0] for l in lines[:3]]
                  == ["a", "b", "c"], "ls %s: %d %r %r" % (p, rc, out, err))
            rc, out, err = run(bin_, "ls", "--json", p)
            doc = json.loads(out) if rc == 0 else {}
            md_bin = doc.get("metadata")
            # the index's str entries are the doc's metadata, shown after the summary line
            check(md_bin is None or md_bin.get("note") == "bin", "ls --json %s metadata %r" % (p, md_bin))
            if md_bin:
                check("metadata 'note': 'bin'" in lines, "ls %s: metadata line: %r" % (p, lines))
            rc, out, err = run(bin_, "diff", pt, p)
            check(rc == 0 and out == "no differences\n", "diff .pt %s: %d %r %r" % (p, rc, out, err))
            rc, out, err = run(bin_, "dump", p)
            check(rc == 0 and json.loads(out)["format"] == "sharded", "dump %s: %d %r" % (p, rc, err))
            for cmd in ("verify", "scan"):
                rc, out, err = run(bin_, cmd, p)
                check(rc == 0, "%s %s: %d %r %r" % (cmd, p, rc, out, err))
        rc, out, err = run(bin_, "ls", pt, binf, os.path.join(d, "missing"))
        check(rc == 3 and out.count("==> ") == 3 and "format sharded" in out,
              "ls .pt folder missing: %d %r" % (rc, out))

    if not ran:
        print("skip: neither safetensors files nor model folders can be read on this build")
        return 77
    print("%d failure(s)" % len(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print(__doc__)
        sys.exit(2)
    try:
        import torch  # noqa: F401
    except ImportError:
        print("skip: %s cannot import torch" % sys.executable)
        sys.exit(77)
    sys.exit(main(sys.argv))
