"""Saves killed at random points never leave a DCP folder that loads as complete with mixed data.

    kill_dcp.py STATEDICT WORKDIR

Two checkpoints A and B of the same keys and shapes (torch 1.13's torch.save, ~16 MB each) are
written over one folder with `statedict convert --format dcp`, alternately, each killed with
SIGKILL after a random delay. After every kill the folder either is refused as an unfinished
save (no .metadata), or loads and equals A or B exactly (statedict dump, sha256 per tensor) —
never a mix: DCP's own in-place overwrite rewrites the .distcp files under the old .metadata.
Exit 0 on success, 1 on a failure.
"""
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import torch

STATEDICT, WORK = sys.argv[1:3]
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print(f"FAIL: {what}")


def dump(folder):
    p = subprocess.run([STATEDICT, "dump", folder], capture_output=True, text=True)
    return p.returncode, p.stdout, p.stderr


shutil.rmtree(WORK, ignore_errors=True)
os.makedirs(WORK)
srcs, refs = [], []
for i in range(2):
    torch.manual_seed(i)
    sd = {f"layer{k}.weight": torch.randn(512, 1024) for k in range(8)}
    sd["step"] = i
    src = os.path.join(WORK, f"{'AB'[i]}.pt")
    torch.save(sd, src)
    ref = os.path.join(WORK, f"ref{'AB'[i]}")
    subprocess.run([STATEDICT, "convert", "--format", "dcp", src, ref], check=True)
    srcs.append(src)
    refs.append(dump(ref)[1])
check(refs[0] != refs[1] and refs[0], "the two references differ")

folder = os.path.join(WORK, "ckpt")
subprocess.run([STATEDICT, "convert", "--format", "dcp", srcs[0], folder], check=True)
t0 = time.monotonic()
p = subprocess.run([STATEDICT, "convert", "--format", "dcp", srcs[1], folder], check=True)
full = time.monotonic() - t0
rng = random.Random(14)
seen = {"A": 0, "B": 0, "unfinished": 0}
for it in range(20):
    src = srcs[it % 2]
    proc = subprocess.Popen([STATEDICT, "convert", "--format", "dcp", src, folder])
    time.sleep(rng.uniform(0, full * 1.2))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    rc, out, err = dump(folder)
    if rc == 0:
        which = "A" if out == refs[0] else "B" if out == refs[1] else None
        check(which is not None, f"kill {it}: the folder loads but equals neither A nor B")
        if which:
            seen[which] += 1
    else:
        check(rc == 3 and "unfinished save" in err, f"kill {it}: exit {rc}: {err[:300]}")
        seen["unfinished"] += 1
print(f"20 kills: {seen}; {len(failures)} failures")
sys.exit(1 if failures else 0)
