#!/usr/bin/env python3
"""Print the comparison of a scripts/bench-ab.sh directory: per scenario row,
each pair's A and B (median of the side's runs), then every run of each side
and the median over all of them. Standard library only."""
import glob
import json
import os
import statistics
import sys


def load(d, side):
    out = []
    for path in sorted(glob.glob(os.path.join(d, "%s-*.json" % side)),
                       key=lambda p: int(p.rsplit("-", 1)[1].split(".")[0])):
        with open(path) as f:
            out.append({r["id"]: r for r in json.load(f)["rows"]})
    return out


def fmt(v):
    return "-" if v is None else ("%.3g" % v if abs(v) < 100 else "{:,.0f}".format(v))


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: bench/ab.py var/bench-ab/<time>")
    d = sys.argv[1]
    a, b = load(d, "A"), load(d, "B")
    if not a or len(a) != len(b):
        sys.exit("bench/ab.py: %s has %d A and %d B results" % (d, len(a), len(b)))
    for rid in a[0]:
        if not all(rid in x for x in a + b):
            continue
        row = a[0][rid]
        print("%s (%s)" % (row["scenario"], row["unit"]))
        for key, name in (("value", row["unit"]), ("p99_ms", "p99 ms")):
            if not isinstance(row.get(key), dict):
                continue
            pairs = ["%s/%s" % (fmt(x[rid][key]["median"]), fmt(y[rid][key]["median"]))
                     for x, y in zip(a, b)]
            runs_a = [v for x in a for v in x[rid][key]["runs"]]
            runs_b = [v for y in b for v in y[rid][key]["runs"]]
            print("  %-10s pairs A/B: %s" % (name, "  ".join(pairs)))
            print("  %-10s A runs %s -> median %s" % ("", " ".join(fmt(v) for v in runs_a),
                                                     fmt(statistics.median(runs_a))))
            print("  %-10s B runs %s -> median %s" % ("", " ".join(fmt(v) for v in runs_b),
                                                     fmt(statistics.median(runs_b))))


if __name__ == "__main__":
    main()
