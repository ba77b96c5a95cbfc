"""Process groups for the DCP tests: gloo on the loopback, met through a FileStore file.

A TCP port probed free beforehand could be taken by another test's process group before ours
binds it, and then both wait for each other; a fresh file cannot be shared by accident.
"""
import datetime
import os
import tempfile

import torch.distributed as dist


def rendezvous():
    """A fresh init_method for init(): a file that does not exist yet."""
    fd, path = tempfile.mkstemp(prefix="sdict-store-")
    os.close(fd)
    os.unlink(path)
    return "file://" + path


def init(rank, world, store):
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    dist.init_process_group("gloo", init_method=store, rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=120))
