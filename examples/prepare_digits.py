#!/usr/bin/python3
"""Write examples/data/digits.pt from the UCI optical-recognition handwritten digits.

usage: /usr/bin/python3 examples/prepare_digits.py DIGITS.csv.gz [OUT.pt]   (default OUT:
       examples/data/digits.pt)

Input: the 1797-row CSV shipped with scikit-learn (sklearn/datasets/data/digits.csv.gz; Debian
package python3-sklearn), one image per row: 64 pixel counts 0..16 (8x8, row-major), then the
label 0..9. Output: torch.save({'x': uint8 [1797, 64], 'y': int64 [1797]}) with rows kept in
the file's order (the C demo trains on the first 1500 and holds out the rest).
The data set is by E. Alpaydin and C. Kaynak, CC BY 4.0; see examples/data/README.md.
"""
import csv
import gzip
import sys

import torch


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    out = sys.argv[2] if len(sys.argv) == 3 else "examples/data/digits.pt"
    xs, ys = [], []
    with gzip.open(sys.argv[1], "rt") as f:
        for row in csv.reader(f):
            if not row:
                continue
            vals = [int(float(v)) for v in row]
            if len(vals) != 65 or not all(0 <= v <= 16 for v in vals[:64]) or not 0 <= vals[64] <= 9:
                sys.exit("unexpected row: %r" % row[:5])
            xs.append(vals[:64])
            ys.append(vals[64])
    x = torch.tensor(xs, dtype=torch.uint8)
    y = torch.tensor(ys, dtype=torch.int64)
    torch.save({"x": x, "y": y}, out)
    print("wrote %s: x %s uint8, y %s int64" % (out, tuple(x.shape), tuple(y.shape)))


if __name__ == "__main__":
    main()
