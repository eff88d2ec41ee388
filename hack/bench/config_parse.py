"""Benchmark of parse_config on the largest inputs it accepts and on the attacks it refuses.

Usage: python3 hack/bench/config_parse.py [--repeat 3] [--only NAME]
Each input is parsed in a fresh child process, so the peak memory (max RSS) is the input's own; the
time is the median over --repeat runs of parse_config alone (the child's start-up not counted). The
accepted inputs are at the bounds of lbspeaker/config/yamlload.py (1 MiB, 100,000 values); the
attacks must be refused in well under a second. The baseline line is an empty configuration, the
interpreter's own memory.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _ip(n: int, base: int = 10 << 24) -> str:
    v = base + n
    return f"{v >> 24}.{v >> 16 & 255}.{v >> 8 & 255}.{v & 255}"


def many_pools() -> str:
    """As many one-address pools as the value bound allows (about 11,000; 9 values each)."""
    pools = "".join(f"- name: pool-{i}\n  protocol: layer2\n  addresses:\n  - {_ip(i)}/32\n" for i in range(11_000))
    return "address-pools:\n" + pools


def many_addresses() -> str:
    """One pool with as many address entries as fit in 1 MiB (about 80,000)."""
    entries: list[str] = []
    size = 0
    while size < 1_040_000:
        entry = f"{_ip(len(entries) * 2)}/32"
        entries.append(entry)
        size += len(entry) + 2
    return f"address-pools:\n- name: big\n  protocol: bgp\n  addresses: [{', '.join(entries)}]\n"


def addresses_and_advertisements() -> str:
    """One bgp pool, 15,000 entries and 15,000 advertisements (pairwise checks would be 2e8 steps)."""
    addresses = ", ".join(f"{_ip(i * 256)}/24" for i in range(15_000))
    advertisements = ", ".join(f"{{localpref: {i}, aggregation-length: 24}}" for i in range(15_000))
    return (
        f"address-pools:\n- name: p\n  protocol: bgp\n  addresses: [{addresses}]\n"
        f"  bgp-advertisements: [{advertisements}]\n"
    )


def many_peers() -> str:
    """3,000 peers, each with a node selector (about 87,000 values; 3,500 would exceed the bound)."""
    peers = "".join(
        f"- peer-address: {_ip(i)}\n  peer-asn: 64501\n  my-asn: 64500\n  hold-time: 90s\n  password: pw{i}\n"
        f"  node-selectors:\n  - match-labels: {{rack: r{i}}}\n    match-expressions:\n"
        f"    - {{key: zone, operator: In, values: [a, b]}}\n"
        for i in range(3_000)
    )
    return "peers:\n" + peers


def laughs(levels: int) -> str:
    """The "billion laughs": 9 aliases per level; 9 levels is 387 million values, 530 bytes."""
    lines = ['l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"l{n}: &l{n} [{','.join([f'*l{n - 1}'] * 9)}]" for n in range(1, levels)]
    lines.append(f"address-pools: *l{levels - 1}")
    return "\n".join(lines) + "\n"


def merge_laughs() -> str:
    """The same through merge keys (<<), which copy mappings."""
    lines = ["m0: &m0 {a: 1, b: 2, c: 3, d: 4, e: 5, f: 6, g: 7, h: 8}"]
    lines += [f"m{n}: &m{n} {{{', '.join(f'k{j}: *m{n - 1}' for j in range(8))}}}" for n in range(1, 10)]
    return "\n".join(lines) + "\ny: {<<: *m9}\n"


INPUTS: dict[str, tuple[str, Callable[[], str]]] = {
    "baseline": ("accept", lambda: ""),
    "many-pools": ("accept", many_pools),
    "many-addresses": ("accept", many_addresses),
    "addresses-x-advertisements": ("accept", addresses_and_advertisements),
    "many-peers": ("accept", many_peers),
    "billion-laughs-9": ("refuse", lambda: laughs(9)),
    "billion-laughs-12": ("refuse", lambda: laughs(12)),
    "merge-key-laughs": ("refuse", merge_laughs),
    "nesting-100k": ("refuse", lambda: "a: " + "[" * 100_000),
    "recursive-alias": ("refuse", lambda: "a: &a [1, *a]\n"),
    "over-1MiB": ("refuse", lambda: "#" * (1024 * 1024 + 1)),
    "1MiB-name": ("refuse", lambda: "address-pools: [{name: " + "x" * 1_040_000 + ", protocol: nope}]\n"),
}

CHILD = """
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
from lbspeaker.config import ConfigError, parse_config
from lbspeaker.config.values import address_range
text = sys.stdin.read()
times, outcome = [], ""
for _ in range(int(sys.argv[2])):
    address_range.cache_clear()  # a cold parse: a new configuration, no entry seen before
    start = time.perf_counter()
    try:
        cfg = parse_config(text)
        outcome = f"accepted: {len(cfg.address_pools)} pools, {len(cfg.peers)} peers"
    except ConfigError as exc:
        outcome = f"refused: {exc.errors[0][:110]}"
    times.append(time.perf_counter() - start)
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"times": times, "rss": rss, "outcome": outcome}))
"""


def run(name: str, text: str, repeat: int) -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(ROOT), str(repeat)],
        input=text,
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    result: dict[str, object] = json.loads(proc.stdout)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", choices=sorted(INPUTS), action="append")
    args = parser.parse_args()
    print(f"{'input':28} {'bytes':>9} {'expect':7} {'median':>9} {'max RSS':>9}  outcome")
    for name, (expect, make) in INPUTS.items():
        if args.only and name not in args.only:
            continue
        text = make()
        result = run(name, text, args.repeat)
        times = result["times"]
        assert isinstance(times, list)
        median = statistics.median(times)
        outcome = str(result["outcome"])
        ok = outcome.startswith("accepted" if expect == "accept" else "refused")
        print(
            f"{name:28} {len(text.encode()):>9} {expect:7} {median * 1e3:>7.1f}ms {result['rss']:>7.1f}MB  "
            f"{'' if ok else 'UNEXPECTED '}{outcome}"
        )


if __name__ == "__main__":
    main()
