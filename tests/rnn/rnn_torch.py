#!/usr/bin/python3
"""LSTM / GRU (and the sequence loss) of statedict's nn layer against real PyTorch.

usage: rnn_torch.py CASE RNN_RUN WORKDIR [INFER]

  lstm / gru   for every combination of num_layers 1 and 2, uni- and bidirectional,
               batch_first False and True, with and without initial states (and one case
               without bias each): torch builds nn.LSTM / nn.GRU with a fixed seed and saves
               its state_dict and inputs; RNN_RUN (tests/rnn/rnn_run.c) runs statedict's module.
               The eval-mode output, h_n and c_n must be within 1e-5 of torch's, and the
               gradients of loss = <output, dout> + <h_n, dh_n> + <c_n, dc_n> with respect to
               the input, h0, c0 and every weight within 1e-4 of torch's autograd (.grad),
               both relative to the largest magnitude of torch's tensor.
  infer        examples/infer --arch lstm|gru with shape options: output equals torch's
               (batched, batch_first, unbatched) and the state_dict it writes back loads
               strictly in torch with the same keys; shape options that contradict the weights,
               and a proj_size checkpoint, fail with a clear message.
  seqloss      infer is not involved: RNN_RUN's `loss` mode computes CrossEntropyLoss over
               [N, C, L] and [N*L, C] logits with ignore_index; loss and logits gradient
               against torch's. Then its module modes run Conv1d (stride, padding, dilation,
               groups, unbatched) and Sigmoid, Tanh, SiLU: output within 1e-5, gradients of
               input and weights within 1e-4 of torch's.
Exit 77 (skip) when torch is not importable.
"""
import os
import subprocess
import sys

try:
    import torch
    import torch.nn as nn
except Exception as e:  # noqa: BLE001
    print(f"SKIP: torch not importable: {e}")
    sys.exit(77)

torch.set_num_threads(1)


def close(name, got, want, rtol):
    got = got.detach().double()
    want = want.detach().double()
    if tuple(got.shape) != tuple(want.shape):
        raise SystemExit(f"FAIL {name}: shape {tuple(got.shape)} vs torch {tuple(want.shape)}")
    scale = max(want.abs().max().item(), 1e-30) if want.numel() else 1.0
    err = (got - want).abs().max().item() if want.numel() else 0.0
    if not err <= rtol * scale:
        raise SystemExit(f"FAIL {name}: max abs difference {err:.3g} > {rtol} x {scale:.3g}")
    return err / scale


def run(cmd, expect_ok=True):
    p = subprocess.run(cmd, capture_output=True, text=True)
    if expect_ok and p.returncode != 0:
        raise SystemExit(f"FAIL: {' '.join(cmd)} exited {p.returncode}: {p.stderr}")
    return p


def rnn_case(kind, work, driver, L, bidir, bf, init, bias=True, I=5, H=6, T=7, B=3):
    torch.manual_seed(1000 * L + 100 * bidir + 10 * bf + init + (0 if bias else 7))
    cls = nn.LSTM if kind == "lstm" else nn.GRU
    m = cls(I, H, num_layers=L, bias=bias, batch_first=bf, bidirectional=bidir)
    D = 2 if bidir else 1
    with torch.no_grad():   # larger than the default init, so the gates leave their linear range
        for p in m.parameters():
            p.mul_(2.0)
    x = torch.randn((B, T, I) if bf else (T, B, I), requires_grad=True)
    h0 = torch.randn(L * D, B, H, requires_grad=True) if init else None
    c0 = torch.randn(L * D, B, H, requires_grad=True) if init and kind == "lstm" else None
    m.eval()
    if kind == "lstm":
        out, (hn, cn) = m(x, (h0, c0)) if init else m(x)
    else:
        out, hn = m(x, h0) if init else m(x)
        cn = None
    dout = torch.randn_like(out)
    dhn = torch.randn_like(hn)
    dcn = torch.randn_like(cn) if cn is not None else None
    loss = (out * dout).sum() + (hn * dhn).sum() + ((cn * dcn).sum() if cn is not None else 0)
    loss.backward()
    blob = {"state_dict": m.state_dict(), "input": x.detach(), "dout": dout, "dh_n": dhn}
    if init:
        blob["h0"] = h0.detach()
        if c0 is not None:
            blob["c0"] = c0.detach()
    if dcn is not None:
        blob["dc_n"] = dcn
    tag = f"{kind}_L{L}_D{D}_bf{int(bf)}_h{int(init)}_b{int(bias)}"
    fin, fout = os.path.join(work, tag + ".in.pt"), os.path.join(work, tag + ".out.pt")
    torch.save(blob, fin)
    run([driver, kind, str(I), str(H), str(L), str(int(bidir)), str(int(bf)), str(int(bias)),
         fin, fout])
    got = torch.load(fout)
    worst_f = max(close(tag + " output", got["output"], out, 1e-5),
                  close(tag + " h_n", got["h_n"], hn, 1e-5),
                  close(tag + " c_n", got["c_n"], cn, 1e-5) if cn is not None else 0.0)
    worst_g = close(tag + " grad.input", got["grad.input"], x.grad, 1e-4)
    if init:
        worst_g = max(worst_g, close(tag + " grad.h0", got["grad.h0"], h0.grad, 1e-4))
        if c0 is not None:
            worst_g = max(worst_g, close(tag + " grad.c0", got["grad.c0"], c0.grad, 1e-4))
    names = [n for n, _ in m.named_parameters()]
    if sorted(k for k in got if k.startswith("grad.") and k[5:] in names) != \
            sorted("grad." + n for n in names):
        raise SystemExit(f"FAIL {tag}: gradient keys {sorted(got)} vs parameters {names}")
    for n, p in m.named_parameters():
        worst_g = max(worst_g, close(f"{tag} grad.{n}", got["grad." + n], p.grad, 1e-4))
    return worst_f, worst_g


def case_rnn(kind, work, driver):
    n = 0
    wf = wg = 0.0
    for L in (1, 2):
        for bidir in (False, True):
            for bf in (False, True):
                for init in (False, True):
                    f, g = rnn_case(kind, work, driver, L, bidir, bf, init)
                    wf, wg, n = max(wf, f), max(wg, g), n + 1
    f, g = rnn_case(kind, work, driver, 2, True, False, True, bias=False)
    wf, wg, n = max(wf, f), max(wg, g), n + 1
    print(f"{kind}: {n} configurations; worst relative difference forward {wf:.2e}, "
          f"gradients {wg:.2e}")


def case_infer(work, infer):
    torch.manual_seed(7)
    cases = [("lstm", dict(num_layers=2, bidirectional=True), False, False),
             ("gru", dict(num_layers=2, batch_first=True), True, False),
             ("lstm", dict(num_layers=1), False, True)]
    for kind, kw, bf, unbatched in cases:
        m = (nn.LSTM if kind == "lstm" else nn.GRU)(4, 5, **kw).eval()
        shape = (6, 4) if unbatched else ((2, 6, 4) if bf else (6, 2, 4))
        x = torch.randn(*shape)
        with torch.no_grad():
            want = m(x)[0]
        w, xi, y = (os.path.join(work, f"infer_{kind}_{s}.pt") for s in ("w", "x", "y"))
        torch.save(m.state_dict(), w)
        torch.save(x, xi)
        args = [infer, "--arch", kind, "--weights", w, "--input", xi, "--output", y,
                "--input-size", "4", "--hidden-size", "5",
                "--num-layers", str(kw.get("num_layers", 1))]
        if kw.get("bidirectional"):
            args.append("--bidirectional")
        if bf:
            args.append("--batch-first")
        state = os.path.join(work, f"infer_{kind}_state.pt")
        run(args + ["--save-state", state])
        close(f"infer {kind} {kw}", torch.load(y), want, 1e-5)
        # the state_dict C writes back loads strictly in torch: same keys, order, values
        sd = torch.load(state)
        if list(sd) != list(m.state_dict()):
            raise SystemExit(f"FAIL infer {kind} state_dict keys {list(sd)}")
        m2 = (nn.LSTM if kind == "lstm" else nn.GRU)(4, 5, **kw)
        m2.load_state_dict(sd, strict=True)
        for k, v in m.state_dict().items():
            if not torch.equal(sd[k], v):
                raise SystemExit(f"FAIL infer {kind} state_dict value {k}")
    # shape options that contradict the weights: a clear message naming the key and shapes
    m = nn.LSTM(4, 5, num_layers=2, bidirectional=True)
    w = os.path.join(work, "infer_bad_w.pt")
    torch.save(m.state_dict(), w)
    xi = os.path.join(work, "infer_bad_x.pt")
    torch.save(torch.randn(3, 1, 4), xi)
    base = [infer, "--arch", "lstm", "--weights", w, "--input", xi,
            "--output", os.path.join(work, "infer_bad_y.pt")]
    for opts, needle in [(["--input-size", "4", "--hidden-size", "5", "--num-layers", "2"],
                          "weight_ih_l0_reverse"),
                         (["--input-size", "3", "--hidden-size", "5", "--num-layers", "2",
                           "--bidirectional"], "--input-size 3"),
                         (["--input-size", "4", "--hidden-size", "6", "--num-layers", "2",
                           "--bidirectional"], "--hidden-size 6"),
                         (["--input-size", "4", "--hidden-size", "5", "--num-layers", "3",
                           "--bidirectional"], "weight_ih_l2"),
                         (["--input-size", "4", "--num-layers", "2", "--bidirectional"],
                          "--hidden-size")]:
        p = run(base + opts, expect_ok=False)
        if p.returncode == 0 or needle not in p.stderr:
            raise SystemExit(f"FAIL infer {opts}: exit {p.returncode}, stderr {p.stderr!r} "
                             f"does not name {needle!r}")
    if hasattr(nn.LSTM(4, 5, proj_size=2), "weight_hr_l0"):
        torch.save(nn.LSTM(4, 5, proj_size=2).state_dict(), w)
        p = run(base + ["--input-size", "4", "--hidden-size", "5"], expect_ok=False)
        if p.returncode == 0 or "proj_size" not in p.stderr:
            raise SystemExit(f"FAIL infer proj_size: {p.returncode} {p.stderr!r}")
    # resnet18 with --num-classes: torchvision's resnet18(num_classes=7)
    try:
        import torchvision
    except Exception:  # noqa: BLE001
        torchvision = None
    if torchvision is not None:
        m = torchvision.models.resnet18(num_classes=7).eval()
        x = torch.randn(1, 3, 32, 32)
        with torch.no_grad():
            want = m(x)
        w, xi, y = (os.path.join(work, f"infer_resnet7_{s}.pt") for s in ("w", "x", "y"))
        torch.save(m.state_dict(), w)
        torch.save(x, xi)
        run([infer, "--arch", "resnet18", "--num-classes", "7", "--weights", w, "--input", xi,
             "--output", y])
        got = torch.load(y)
        if got.shape != (1, 7) or (got - want).abs().max().item() > 1e-4:
            raise SystemExit(f"FAIL resnet18 --num-classes 7: {got} vs {want}")
        p = run([infer, "--arch", "resnet18", "--weights", w, "--input", xi, "--output", y],
                expect_ok=False)
        if p.returncode == 0 or "size mismatch for fc.weight" not in p.stderr:
            raise SystemExit(f"FAIL resnet18 without --num-classes: {p.stderr!r}")
    print("infer: lstm/gru outputs equal torch's; 5 shape errors and proj_size refused clearly; "
          "resnet18 --num-classes")


def case_seqloss(work, driver):
    torch.manual_seed(3)
    N, C, L = 3, 5, 4
    for layout in ("ncl", "flat"):
        for ignore in (-100, 2):
            logits = torch.randn((N, C, L) if layout == "ncl" else (N * L, C), requires_grad=True)
            t = torch.randint(0, C, (N, L) if layout == "ncl" else (N * L,))
            t.view(-1)[0] = ignore
            t.view(-1)[5] = ignore
            loss = nn.CrossEntropyLoss(ignore_index=ignore)(logits, t)
            loss.backward()
            fin = os.path.join(work, f"seqloss_{layout}_{ignore}.in.pt")
            fout = os.path.join(work, f"seqloss_{layout}_{ignore}.out.pt")
            torch.save({"logits": logits.detach(), "target": t}, fin)
            run([driver, "loss", str(ignore), "0", "0", "0", "0", "0", fin, fout])
            got = torch.load(fout)
            close(f"seqloss {layout} ignore={ignore} loss", got["loss"], loss, 1e-5)
            close(f"seqloss {layout} ignore={ignore} grad", got["grad.logits"], logits.grad, 1e-5)
    # every target ignored: torch's mean over no element is nan
    logits = torch.randn(2, 3, 2, requires_grad=True)
    t = torch.full((2, 2), -100, dtype=torch.long)
    want = nn.CrossEntropyLoss()(logits, t)
    fin = os.path.join(work, "seqloss_allign.in.pt")
    fout = os.path.join(work, "seqloss_allign.out.pt")
    torch.save({"logits": logits.detach(), "target": t}, fin)
    run([driver, "loss", "-100", "0", "0", "0", "0", "0", fin, fout])
    got = torch.load(fout)["loss"]
    if not (torch.isnan(want) and torch.isnan(got)):
        raise SystemExit(f"FAIL seqloss all ignored: {got} vs torch {want}")
    print("seqloss: [N, C, L] and [N*L, C] with ignore_index equal torch's loss and gradient")


def case_modules(work, driver):
    torch.manual_seed(11)
    runs = [("conv1d", nn.Conv1d(4, 6, 3, stride=2, padding=1, dilation=2), (2, 4, 11),
             ["4", "6", "3", "2", "1", "2"]),
            ("conv1d", nn.Conv1d(4, 6, 3, stride=1, padding=2, dilation=1), (4, 9),
             ["4", "6", "3", "1", "2", "1"]),
            ("conv1d_g2", nn.Conv1d(4, 6, 2, stride=1, padding=0, dilation=1, groups=2,
                                    bias=False), (3, 4, 8), ["4", "6", "2", "1", "0", "1"])]
    for act, cls in (("sigmoid", nn.Sigmoid), ("tanh", nn.Tanh), ("silu", nn.SiLU)):
        runs.append((act, cls(), (3, 5, 7), ["0"] * 6))
    for i, (name, m, shape, args) in enumerate(runs):
        x = (3 * torch.randn(*shape)).requires_grad_()
        y = m(x)
        dout = torch.randn_like(y)
        (y * dout).sum().backward()
        fin = os.path.join(work, f"mod{i}_{name}.in.pt")
        fout = os.path.join(work, f"mod{i}_{name}.out.pt")
        torch.save({"state_dict": m.state_dict(), "input": x.detach(), "dout": dout}, fin)
        run([driver, name] + args + [fin, fout])
        got = torch.load(fout)
        close(f"{name} {shape} output", got["output"], y, 1e-5)
        close(f"{name} {shape} grad.input", got["grad.input"], x.grad, 1e-4)
        for n, p in m.named_parameters():
            close(f"{name} {shape} grad.{n}", got["grad." + n], p.grad, 1e-4)
    print(f"modules: {len(runs)} Conv1d / Sigmoid / Tanh / SiLU runs equal torch's output and "
          f"gradients")


def main():
    if len(sys.argv) < 4:
        raise SystemExit(__doc__)
    case, driver, work = sys.argv[1], sys.argv[2], sys.argv[3]
    os.makedirs(work, exist_ok=True)
    if case in ("lstm", "gru"):
        case_rnn(case, work, driver)
    elif case == "infer":
        case_infer(work, sys.argv[4])
    elif case == "seqloss":
        case_seqloss(work, driver)
        case_modules(work, driver)
    else:
        raise SystemExit(f"unknown case {case}")


if __name__ == "__main__":
    main()
