#!/usr/bin/python3
"""Write the example checkpoints in examples/data/ with real PyTorch (torch.save).

usage: /usr/bin/python3 examples/make_examples.py [OUTDIR]     (default: examples/data)

The files are committed, so `statedict ls examples/data/lenet.pt` works on a machine without
torch; this script is how they were made (Debian's python3-torch 1.13, seeded: re-running it
writes the same tensors). Each file stays well under 300 KB:

  lenet.pt         state_dict of the LeNet in PyTorch's "Saving and loading models" tutorial
                   (conv1 3->6 k5, pool 2x2, conv2 6->16 k5, fc1 400->120, fc2 120->84, fc3 84->10)
  checkpoint.tar   a general checkpoint as in the tutorial: {'epoch', 'model_state_dict',
                   'optimizer_state_dict' (SGD, momentum 0.9, after 2 steps), 'loss'} of a small
                   MLP classifier (LeNet plus its momentum buffers would be ~500 KB)
  gan.pt           two models and two optimizers in one file, as in the tutorial's "saving
                   multiple models": {'modelA_state_dict', 'modelB_state_dict',
                   'optimizerA_state_dict', 'optimizerB_state_dict'} (DCGAN-style generator and
                   discriminator, Adam betas (0.5, 0.999), 2 steps each)
"""
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.optim as optim


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from recipe_net import TheModelClass  # noqa: E402


def lenet():
    torch.manual_seed(0)
    return TheModelClass()


def checkpoint():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Dropout(0.1), nn.Linear(64, 10))
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    g = torch.Generator().manual_seed(1)
    for _ in range(2):
        x = torch.randn(8, 20, generator=g)
        y = torch.randint(0, 10, (8,), generator=g)
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
    return {"epoch": 2, "model_state_dict": model.state_dict(),
            "optimizer_state_dict": opt.state_dict(), "loss": loss.item()}


def gan():
    torch.manual_seed(2)
    netG = nn.Sequential(nn.ConvTranspose2d(16, 8, 4, 1, 0, bias=False), nn.BatchNorm2d(8),
                         nn.ReLU(True), nn.ConvTranspose2d(8, 3, 4, 2, 1, bias=False), nn.Tanh())
    netD = nn.Sequential(nn.Conv2d(3, 8, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),
                         nn.Conv2d(8, 1, 4, 1, 0, bias=False), nn.Sigmoid())
    optG = optim.Adam(netG.parameters(), lr=2e-4, betas=(0.5, 0.999))
    optD = optim.Adam(netD.parameters(), lr=2e-4, betas=(0.5, 0.999))
    for _ in range(2):
        fake = netG(torch.randn(2, 16, 1, 1))
        optD.zero_grad()
        F.binary_cross_entropy(netD(fake.detach()).view(-1), torch.zeros(2)).backward()
        optD.step()
        optG.zero_grad()
        F.binary_cross_entropy(netD(fake).view(-1), torch.ones(2)).backward()
        optG.step()
    return {"modelA_state_dict": netG.state_dict(), "modelB_state_dict": netD.state_dict(),
            "optimizerA_state_dict": optG.state_dict(),
            "optimizerB_state_dict": optD.state_dict()}


def main(argv):
    outdir = argv[1] if len(argv) > 1 else os.path.join(os.path.dirname(
        os.path.abspath(__file__)), "data")
    os.makedirs(outdir, exist_ok=True)
    for name, build in (("lenet.pt", lambda: lenet().state_dict()),
                        ("checkpoint.tar", checkpoint), ("gan.pt", gan)):
        path = os.path.join(outdir, name)
        torch.save(build(), path)
        size = os.path.getsize(path)
        assert size < 300 * 1024, "%s is %d bytes, over the 300 KB budget" % (name, size)
        print("%-16s %8d bytes" % (name, size))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
