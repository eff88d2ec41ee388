"""Benchmark of election.owners(): prints the time to elect owners for many IPs over a set of nodes.

Usage: python3 hack/bench/election.py [--ips 1000] [--nodes 10] [--repeat 20]
The figure that matters is the median: the speaker recomputes all owners on every membership change.
"""

from __future__ import annotations

import argparse
import ipaddress
import statistics
import sys
import time
from pathlib import Path

try:
    from lbspeaker import election
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from lbspeaker import election


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ips", type=int, default=1000)
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()

    # Half IPv4, half IPv6, from the documentation ranges.
    v4 = int(ipaddress.IPv4Address("198.51.100.0"))
    v6 = int(ipaddress.IPv6Address("2001:db8::"))
    ips = [
        str(ipaddress.IPv4Address(v4 + i)) if i % 2 == 0 else str(ipaddress.IPv6Address(v6 + i))
        for i in range(args.ips)
    ]
    nodes = [f"worker-{n:03d}.lab.example" for n in range(args.nodes)]
    eligible = {ip: nodes for ip in ips}

    timings = []
    result: dict[str, str] = {}
    for _ in range(args.repeat):
        start = time.perf_counter()
        result = election.owners(ips, eligible)
        timings.append(time.perf_counter() - start)

    per_node = {node: 0 for node in nodes}
    for node in result.values():
        per_node[node] += 1
    print(
        f"owners(): {args.ips} IPs x {args.nodes} nodes: median {statistics.median(timings) * 1e3:.2f} ms, "
        f"min {min(timings) * 1e3:.2f} ms over {args.repeat} runs"
    )
    print(f"IPs per node: min {min(per_node.values())}, max {max(per_node.values())}")


if __name__ == "__main__":
    main()
