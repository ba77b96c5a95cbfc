"""DCP folders saved and loaded by MPI ranks (statedict_mpi, through examples/dcp_mpi), run on the
host (the torch chroots have no MPI) and checked with real torch:

  - examples/dcp_mpi saves with 1 (rows), 2 (columns) and 4 (rows; columns) ranks: uneven and
    empty shards, replicated biases and steps, non-tensor param_groups values; torch's
    dcp_to_torch_save gives the full state dict and dcp.load from 3 gloo ranks (127.0.0.1) gives
    each rank its row or column shard (mpi_check.py);
  - torch saves from 2 ranks; examples/dcp_mpi loads it, and the 4-rank MPI save, with 1, 2, 3
    and 4 ranks under either sharding, each rank checking every value of its slices;
  - a load with the save's own sharding reads exactly one item per non-empty slice (the lazy
    reader reads only overlapping chunks);
  - a save where one rank fails (a bad shard when planning, an unwritable file when writing)
    fails on every rank and leaves the previous checkpoint as it was, staged files removed; a
    save that fails while putting the files in place leaves no .metadata (an unfinished save).

usage: mpi_dcp.py GEN_PYTHON DCP_MPI MPIEXEC WORK
"""
import os
import shutil
import subprocess
import sys

PY, EXE, MPIEXEC, WORK = sys.argv[1:5]
HERE = os.path.dirname(os.path.abspath(__file__))
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           OMPI_MCA_rmaps_base_oversubscribe="1")
# under the ASan build: Open MPI's own allocations from MPI_Init outlive MPI_Finalize; full
# stacks so that the suppressions match them (and only them)
ENV["LSAN_OPTIONS"] = ":".join(filter(None, [os.environ.get("LSAN_OPTIONS"),
                                             "suppressions=" + os.path.join(HERE, "lsan_mpi.supp")]))
ENV["ASAN_OPTIONS"] = ":".join(filter(None, [os.environ.get("ASAN_OPTIONS"),
                                             "fast_unwind_on_malloc=0"]))
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what)


def mpi(n, *args, ok=True):
    cmd = [MPIEXEC, "--oversubscribe", "-np", str(n), EXE, *map(str, args)]
    p = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=120)
    if ok:
        check(p.returncode == 0, f"{' '.join(cmd[2:])} exited {p.returncode}: "
              f"{p.stdout[-800:]} {p.stderr[-1500:]}")
    return p


def folder(name):
    return os.path.join(WORK, name)


shutil.rmtree(WORK, ignore_errors=True)
os.makedirs(WORK)

# a generation that is not set up makes the wrapper exit 77 (ctest's skip)
probe = subprocess.run([PY, "-c", "import torch"], capture_output=True)
if probe.returncode == 77:
    print(probe.stdout.decode(), probe.stderr.decode())
    sys.exit(77)

saves = [("m1", 1, "rows"), ("m2", 2, "cols"), ("m4", 4, "rows"), ("m4c", 4, "cols")]
for name, n, shard in saves:
    mpi(n, "save", folder(name), "--shard", shard)
    check(os.path.isfile(os.path.join(folder(name), ".metadata")), f"{name}: no .metadata")
    files = sorted(f for f in os.listdir(folder(name)) if f.endswith(".distcp"))
    check(files == [f"__{r}_0.distcp" for r in range(n)], f"{name}: files {files}")

# failures: planning and writing (old checkpoint kept), fresh folder and commit (no .metadata)
shutil.copytree(folder("m2"), folder("fplan"))
p = mpi(2, "save", folder("fplan"), "--fail-rank", "1", ok=False)
check(p.returncode != 0 and p.stderr.count("rank 1: shard") >= 2,
      f"failing plan: exit {p.returncode}, every rank should report rank 1's error: {p.stderr[-800:]}")
mpi(2, "load", folder("fplan"))
p = mpi(4, "save", folder("ffresh"), "--fail-rank", "3", ok=False)
check(p.returncode != 0 and not os.path.exists(os.path.join(folder("ffresh"), ".metadata")),
      f"failing rank 3 on a fresh folder: exit {p.returncode}, .metadata written?")
shutil.copytree(folder("m2"), folder("fwrite"))
os.mkdir(os.path.join(folder("fwrite"), "__1_0.distcp.partial"))
p = mpi(2, "save", folder("fwrite"), ok=False)
check(p.returncode != 0 and "rank 1:" in p.stderr, f"failing write: exit {p.returncode}")
left = sorted(os.listdir(folder("fwrite")))
check(left == [".metadata", "__0_0.distcp", "__1_0.distcp", "__1_0.distcp.partial"],
      f"a save whose rank 1 failed to write left {left}, not the old checkpoint as it was")
mpi(2, "load", folder("fwrite"))
shutil.copytree(folder("m2"), folder("fcommit"))
os.remove(os.path.join(folder("fcommit"), "__1_0.distcp"))
os.mkdir(os.path.join(folder("fcommit"), "__1_0.distcp"))
p = mpi(2, "save", folder("fcommit"), ok=False)
check(p.returncode != 0, f"failing commit: exit {p.returncode}")
check(not os.path.exists(os.path.join(folder("fcommit"), ".metadata")),
      "a save that failed to put rank 1's file in place left a .metadata")
p = mpi(2, "load", folder("fcommit"), ok=False)
check(p.returncode != 0 and "unfinished save" in p.stderr,
      f"loading the failed save: exit {p.returncode} {p.stderr[-400:]}")

# torch: full conversion and resharded dcp.load of the MPI saves; a 2-rank torch save
r = subprocess.run([PY, os.path.join(HERE, "mpi_check.py"), "check", WORK] +
                   [f"{folder(n)}:{k}" for n, k, _ in saves], capture_output=True, text=True,
                   timeout=600)
print(r.stdout[-3000:])
if r.returncode == 77:
    sys.exit(77)
check(r.returncode == 0, f"mpi_check.py check exited {r.returncode}: {r.stderr[-3000:]}")
r = subprocess.run([PY, os.path.join(HERE, "mpi_check.py"), "save", WORK, folder("t2")],
                   capture_output=True, text=True, timeout=600)
check(r.returncode == 0, f"mpi_check.py save exited {r.returncode}: {r.stderr[-3000:]}")

# MPI loads with other rank counts and shardings than the save's
# (t2 from 2 ranks and m4 from 4 with their own sharding are the --own-chunks runs below)
for src, counts in (("t2", (1, 3, 4)), ("m4", (1, 2, 3))):
    for n in counts:
        mpi(n, "load", folder(src), "--shard", "cols" if n == 3 else "rows")
mpi(2, "load", folder("t2"), "--shard", "rows", "--own-chunks")
mpi(4, "load", folder("m4"), "--shard", "rows", "--own-chunks")
mpi(4, "load", folder("m4c"), "--shard", "cols", "--own-chunks")
mpi(2, "load", folder("m2"), "--shard", "cols", "--own-chunks")
# a different sharding reads more than one item for some slice
p = mpi(4, "load", folder("m4"), "--shard", "cols", "--own-chunks", ok=False)
check(p.returncode != 0 and "items, expected" in p.stderr,
      "--own-chunks should see the extra reads of a resharded load")

print(f"{len(failures)} failures")
sys.exit(1 if failures else 0)
