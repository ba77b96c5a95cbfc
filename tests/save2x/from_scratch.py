#!/usr/bin/python3
"""State_dicts the nn layer builds from scratch in C, against torch.save's bytes.

usage: from_scratch.py INFER WORKDIR

For LeNet, torchvision's resnet18 and the MLP with BatchNorm1d (tests/nn/nn_interop.py's
models), the torch running this script saves model.state_dict() into WORKDIR/torch/; the
`infer` example loads those weights into its own modules, runs them in eval mode (which changes
no state) and saves its module's state_dict() (built in C: keys, tensors, _metadata) to
WORKDIR/sdict/ under the same file name, in this torch's layout (1.13's for torch 1.x, 2.x's
otherwise). The files must be byte-identical, and torch.load must read ours with its defaults.
Exits 77 when torch is unavailable.
"""
import os
import subprocess
import sys

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "nn"))
import nn_interop  # noqa: E402  (exits 77 itself when torch is missing)

torch = nn_interop.torch


def main():
    if len(sys.argv) != 3:
        print(__doc__)
        return 2
    infer, work = sys.argv[1], sys.argv[2]
    layout = "1.13" if torch.__version__.startswith("1.") else "2.x"
    print(f"torch {torch.__version__}; statedict writes the {layout} layout")
    for d in ("torch", "sdict", "in"):
        os.makedirs(os.path.join(work, d), exist_ok=True)
    failures = []
    for arch in ("lenet", "resnet18", "mlp"):
        torch.manual_seed(0)
        try:
            model, x = nn_interop.build(arch)
        except ImportError as e:
            print(f"NOTE: {arch} not run: {e}")
            continue
        model.eval()
        w, xi, y = (os.path.join(work, "in", f"{arch}_{n}.pt") for n in ("w", "x", "y"))
        ref, ours = (os.path.join(work, d, f"{arch}_state.pt") for d in ("torch", "sdict"))
        torch.save(model.state_dict(), w)
        torch.save(x, xi)
        torch.save(model.state_dict(), ref)
        r = subprocess.run([infer, "--arch", arch, "--weights", w, "--input", xi, "--output", y,
                            "--save-state", ours, "--layout", layout],
                           capture_output=True, text=True)
        if r.returncode != 0:
            failures.append(f"{arch}: infer failed: {r.stderr.strip()}")
            continue
        with open(ref, "rb") as a, open(ours, "rb") as b:
            same = a.read() == b.read()
        print(f"{'IDENTICAL ' if same else 'DIFFERENT '} {arch}_state.pt")
        if not same:
            failures.append(f"{arch}: the C-built state_dict is not byte-identical to torch's")
        sd = torch.load(ours)
        if list(sd.keys()) != list(model.state_dict().keys()):
            failures.append(f"{arch}: keys differ after torch.load")
    for f in failures:
        print("FAILURE:", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
