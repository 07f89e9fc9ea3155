#!/usr/bin/env python3
"""GPU time and launches per training step, by kernel, from an Nsight Compute CSV.

Usage (on a GPU machine, with a CUDA build of ddm):

    ncu --clock-control none --metrics gpu__time_duration.sum --csv --log-file unet.csv \
        ddm bench-train --preset unet28 --mode train --batch-size 64 --steps 3 --warmup 1 \
        --seconds 1 --device cuda:0
    python3 scripts/ncu_summary.py unet.csv 4      # 4 = the steps profiled (warm-up + timed)

Prints the total kernel count and GPU time per step, then the kernels that take the most.
"""

import collections
import csv
import sys

UNITS = {"nsecond": 1e-3, "ns": 1e-3, "usecond": 1.0, "us": 1.0, "msecond": 1e3, "ms": 1e3}


def main():
    path, steps = sys.argv[1], int(sys.argv[2])
    rows = list(csv.reader(open(path)))
    start = next(i for i, row in enumerate(rows) if "Kernel Name" in row)
    head = rows[start]
    name_at, value_at, unit_at = (
        head.index("Kernel Name"),
        head.index("Metric Value"),
        head.index("Metric Unit"),
    )
    time, launches = collections.Counter(), collections.Counter()
    for row in rows[start + 1 :]:
        if len(row) != len(head):
            continue
        micros = float(row[value_at].replace(",", "")) * UNITS[row[unit_at]]
        name = row[name_at].split("(")[0][:60]
        time[name] += micros
        launches[name] += 1
    print(
        f"{sum(launches.values()) / steps:.0f} kernels and "
        f"{sum(time.values()) / steps / 1e3:.2f} ms of GPU time per step"
    )
    for name, micros in time.most_common(15):
        print(f"{micros / steps / 1e3:8.2f} ms {launches[name] / steps:7.1f} launches  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
