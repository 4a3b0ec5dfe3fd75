#!/usr/bin/env python3
"""Plots of the figures in RESULTS.md, from the reports the harnesses write.

    python3 scripts/plot.py [STARTUP_TSV] [PEERS_TSV]

STARTUP_TSV: `cargo bench --bench startup` writes target/startup-bench/startup.tsv
(default: docs/results/startup.tsv, the committed copy). PEERS_TSV:
`REPORT=FILE bash loadtest/peers.sh` (default: docs/results/peers.tsv).
Writes docs/results/startup.png, peers-throughput.png and peers-latency.png.
Needs matplotlib (bash scripts/setup.sh --bench installs it).
"""

import csv
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "results"


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def number(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def startup(path):
    data = [r for r in rows(path) if number(r["median_ms"]) is not None or number(r["seed_ms"]) is not None]
    labels = [r["row"] for r in data]
    today = [number(r["median_ms"]) for r in data]
    seed = [number(r["seed_ms"]) for r in data]
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(labels) + 1.5))
    y = range(len(labels))
    ax.barh([i - 0.2 for i in y], [t or 0 for t in today], height=0.4, label="this machine (median)", color="#2b6cb0")
    ax.barh([i + 0.2 for i in y], [s or 0 for s in seed], height=0.4, label="the seed (2019)", color="#d69e2e")
    for i, t in enumerate(today):
        if t is None:
            ax.text(0.001, i - 0.2, " skipped", va="center", fontsize=8)
    ax.set_xscale("log")
    ax.set_yticks(list(y))
    ax.set_yticklabels(labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("start-up of a hello world, ms (log scale)")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("Start-up: the seed's table, reproduced")
    fig.tight_layout()
    fig.savefig(OUT / "startup.png", dpi=110)


def peers(path):
    data = rows(path)
    labels = [r["target"] for r in data]
    fig, (rps, cpu) = plt.subplots(1, 2, figsize=(12, 0.45 * len(labels) + 1.8))
    y = range(len(labels))
    rps.barh(list(y), [number(r["rps"]) or 0 for r in data], color="#2b6cb0")
    rps.set_xlabel("requests/s at saturation (wrk -t1 -c32)")
    cpu.barh(list(y), [number(r["cpu_us"]) or 0 for r in data], color="#c05621")
    cpu.set_xlabel("server CPU µs per request (pinned)")
    for ax in (rps, cpu):
        ax.set_yticks(list(y))
        ax.set_yticklabels(labels, fontsize=8)
        ax.invert_yaxis()
    cpu.set_yticklabels([])
    fig.suptitle("Throughput and CPU per request, every peer on the same work")
    fig.tight_layout()
    fig.savefig(OUT / "peers-throughput.png", dpi=110)

    have = [r for r in data if number(r["p50_ms"]) is not None]
    if not have:
        return
    fig, ax = plt.subplots(figsize=(9, 0.5 * len(have) + 1.8))
    y = range(len(have))
    for offset, key, label, color in [(-0.25, "p50_ms", "p50", "#2f855a"), (0, "p99_ms", "p99", "#d69e2e"), (0.25, "p999_ms", "p99.9", "#c53030")]:
        ax.barh([i + offset for i in y], [number(r[key]) for r in have], height=0.25, label=label, color=color)
    ax.set_xscale("log")
    ax.set_yticks(list(y))
    ax.set_yticklabels([r["target"] for r in have], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("latency at half the maximum rate, ms (oha, latency-corrected; log scale)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(OUT / "peers-latency.png", dpi=110)


def main():
    startup_tsv = Path(sys.argv[1]) if len(sys.argv) > 1 else OUT / "startup.tsv"
    peers_tsv = Path(sys.argv[2]) if len(sys.argv) > 2 else OUT / "peers.tsv"
    OUT.mkdir(parents=True, exist_ok=True)
    if startup_tsv.exists():
        startup(startup_tsv)
        print(f"wrote {OUT / 'startup.png'}")
    else:
        print(f"no {startup_tsv}: run cargo bench --bench startup", file=sys.stderr)
    if peers_tsv.exists():
        peers(peers_tsv)
        print(f"wrote {OUT / 'peers-throughput.png'} and peers-latency.png")
    else:
        print(f"no {peers_tsv}: run REPORT={peers_tsv} bash loadtest/peers.sh", file=sys.stderr)


if __name__ == "__main__":
    main()
