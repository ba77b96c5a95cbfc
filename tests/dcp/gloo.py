"""Process groups for the DCP tests: gloo on the loopback, met through a FileStore file.

A TCP port probed free beforehand could be taken by another test's process group before ours
binds it, and then both wait for each other; a fresh file cannot be shared by accident. The
tests that start process groups also never run at the same time (CTest RESOURCE_LOCK gloo).
If a rank hangs, a watchdog prints its Python stack and ends it, so the test fails within
minutes and says where (that is how the hang in done() below was found).
"""
import datetime
import faulthandler
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
    faulthandler.dump_traceback_later(240, exit=True)
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    dist.init_process_group("gloo", init_method=store, rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=120))


def done():
    """After the last barrier. torch 2.6's destroy_process_group was seen to wait forever for a
    peer that had already gone, so a group with peers is left to process exit, which frees it;
    a one-process group (this process goes on) is destroyed."""
    if dist.get_world_size() == 1:
        dist.destroy_process_group()
    faulthandler.cancel_dump_traceback_later()
