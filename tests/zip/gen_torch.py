# Writes small checkpoints with real torch.save for the zip byte-identity test.
# Usage: gen_torch.py OUTDIR ; exits 77 (ctest skip) when torch cannot be imported.
import collections
import os
import sys

try:
    import torch
except Exception as e:  # noqa: BLE001 - any import failure means "no torch here"
    print("skipping: torch is not importable by %s (%s)" % (sys.executable, e))
    sys.exit(77)

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
torch.manual_seed(0)

# A few tensors including an empty one (0x0800 record without a data descriptor).
torch.save({"a": torch.arange(10.0), "e": torch.empty(0), "b": torch.ones(3, 3, dtype=torch.int64)},
           os.path.join(out, "x.pt"))

# More than 10 storages (string-sorted keys), mixed dtypes, a 1.2 MB record; the archive name
# keeps the text before the last dot ("ckpt.pth").
sd = collections.OrderedDict()
for i in range(23):
    sd["layer%d.weight" % i] = torch.randn(i + 1, 3)
sd["empty"] = torch.empty(0)
sd["half"] = torch.ones(5, dtype=torch.float16)
sd["big"] = torch.zeros(300000)
torch.save(sd, os.path.join(out, "ckpt.pth.tar"))

# A long archive name moves every padding value.
torch.save({"w": torch.randn(7, 5), "n": 3},
           os.path.join(out, "a_much_longer_archive_name_to_shift_padding.pt"))
