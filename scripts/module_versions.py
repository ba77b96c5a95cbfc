#!/usr/bin/env python3
"""Prints "module<TAB>qualname<TAB>version" for every nn.Module subclass in torch and
torchvision whose class attribute _version is not 1 (Module.state_dict() writes it into
_metadata). src/module_versions.h is the union of this script's output under each torch
generation (scripts/torchenv python GEN scripts/module_versions.py), sorted."""
import importlib
import pkgutil

import torch.nn as nn

for pkg in ("torch.nn", "torch.ao", "torchvision"):
    try:
        p = importlib.import_module(pkg)
    except Exception:
        continue
    for info in pkgutil.walk_packages(p.__path__, pkg + "."):
        if "test" in info.name:
            continue
        try:
            importlib.import_module(info.name)
        except Exception:
            pass
seen, todo = set(), [nn.Module]
while todo:
    for s in todo.pop().__subclasses__():
        if s not in seen:
            seen.add(s)
            todo.append(s)
for c in sorted(seen, key=lambda c: (c.__module__, c.__qualname__)):
    v = getattr(c, "_version", 1)
    if v != 1 and c.__module__.startswith(("torch", "torchvision")):
        print(f"{c.__module__}\t{c.__qualname__}\t{v}")
