"""`lbspeaker status`: what the cluster looks like to lbspeaker, read straight from the API.

Pools with used/total addresses per family, and every LoadBalancer Service with its external IPs
and the pool they come from. Usage is computed here from the Service statuses and the ConfigMaps,
so the command works without reaching the controller.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from controller.allocator import Allocator, Assignment
from controller.reconcile import pool_specs
from controller.service import BadAnnotation, is_load_balancer, service_request, status_ips
from lbspeaker.config.cluster import config_sources, load_config
from lbspeaker.kube.client import load_api_client
from lbspeaker.kube.rest import JSON, Rest, path_for


def table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def render(configmaps: list[JSON], services: list[JSON], *, config_name: str = "config",
           lb_class: str | None = None) -> str:
    cfg, errors = load_config(config_sources(configmaps, config_name))
    out: list[str] = []
    if cfg is None:
        out.append("configuration: " + ("; ".join(e for _, e in errors) if errors else "missing"))
    alloc = Allocator(pool_specs(cfg) if cfg else [])
    lbs = sorted((s for s in services if is_load_balancer(s, lb_class)),
                 key=lambda s: (s["metadata"].get("namespace", ""), s["metadata"]["name"]))
    pools: dict[str, str] = {}
    for svc in sorted(lbs, key=lambda s: s["metadata"].get("creationTimestamp") or ""):
        ips = status_ips(svc)
        if not ips:
            continue
        try:
            got = alloc.adopt(service_request(svc), ips)
        except BadAnnotation:
            continue
        if isinstance(got, Assignment):
            pools[_key(svc)] = got.pool
    if cfg is not None:
        protocol = {p.name: p.protocol for p in cfg.address_pools}
        rows = [["POOL", "PROTOCOL", "FAMILY", "USED", "TOTAL"]]
        rows += [[u.pool, protocol.get(u.pool, "?"), f"IPv{u.family}", str(u.in_use), str(u.total)]
                 for u in alloc.usage()]
        out.append(table(rows))
    rows = [["NAMESPACE", "NAME", "EXTERNAL-IP", "POOL"]]
    for svc in lbs:
        ips = status_ips(svc)
        rows.append([svc["metadata"].get("namespace", ""), svc["metadata"]["name"],
                     ",".join(ips) or "<pending>", pools.get(_key(svc), "-" if not ips else "?")])
    out.append("")
    out.append(table(rows))
    return "\n".join(out)


def _key(svc: JSON) -> str:
    return f"{svc['metadata'].get('namespace')}/{svc['metadata']['name']}"


def run(args: argparse.Namespace) -> int:
    rest = Rest(load_api_client(args.kubeconfig))
    cms = rest.get(path_for("v1", "configmaps", args.namespace)).get("items") or []
    svcs = rest.get(path_for("v1", "services")).get("items") or []
    print(render(cms, svcs, config_name=args.config_name, lb_class=args.lb_class))
    return 0
