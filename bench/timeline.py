#!/usr/bin/env python3
"""Per-device timelines of benchmark runs, as one PNG (matplotlib).

Usage: python bench/timeline.py RESULTS_DIR WORKLOAD LABEL [LABEL ...] --out FILE.png

Reads each label's simulated-device log (``RESULTS_DIR/WORKLOAD/LABEL/devlog.jsonl``, written by
../shared/bench/pb.py), takes the label's last timed run, and draws one row per device with a
bar per request, from the moment the run was launched. Long requests are drawn darker, so where
the long tests landed (early, or last and alone) is visible at a glance.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def last_run(devlog: Path) -> tuple[float, list[dict[str, Any]]]:
    """The launch time and the requests of the newest run in a pb.py device log."""
    start, records = 0.0, []
    for line in devlog.read_text().splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if "mark" in item:
            start, records = float(item["t"]), []
        elif "t_start" in item:
            records.append(item)
    return start, records


def plot(
    results: Path, workload: str, labels: list[str], out: Path, titles: dict[str, str] | None = None
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        len(labels), 1, figsize=(10, 1.6 + 1.3 * len(labels)), sharex=True, squeeze=False
    )
    longest = 0.0
    for ax, label in zip(axes[:, 0], labels, strict=True):
        start, records = last_run(results / workload / label / "devlog.jsonl")
        devices = sorted({r["dev"] for r in records})
        end = 0.0
        for row, device in enumerate(devices):
            for r in (r for r in records if r["dev"] == device):
                begin, width = r["t_start"] - start, r["t_end"] - r["t_start"]
                end = max(end, begin + width)
                color = "#1f4e79" if r["ms"] >= 1000 else "#9dc3e6"
                ax.broken_barh(
                    [(begin, width)], (row - 0.4, 0.8), facecolors=color, edgecolors="white", linewidth=0.3
                )
        longest = max(longest, end)
        ax.set_yticks(range(len(devices)), [d.split(":")[0] for d in devices], fontsize=8)
        name = (titles or {}).get(label, label)
        ax.set_title(f"{name}: last device done at {end:.2f} s after launch", fontsize=9, loc="left")
        ax.axvline(end, color="#c00000", linewidth=0.8)
    axes[-1, 0].set_xlabel("seconds since the command was launched (dark: tests of 1 s or more)")
    for ax in axes[:, 0]:
        ax.set_xlim(0, longest * 1.02)
    fig.suptitle(f"{workload}: what each device did, one run per runner", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("results", type=Path)
    parser.add_argument("workload")
    parser.add_argument("labels", nargs="+")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    missing = [
        lab for lab in args.labels if not (args.results / args.workload / lab / "devlog.jsonl").is_file()
    ]
    if missing:
        print(
            f"error: no device log for {', '.join(missing)} under {args.results / args.workload}",
            file=sys.stderr,
        )
        return 2
    plot(args.results, args.workload, args.labels, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
