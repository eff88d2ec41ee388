"""`lbspeaker status`: what the cluster looks like to lbspeaker, read straight from the API.

Pools with used/total addresses per family, and every LoadBalancer Service with its external IPs
and the pool they come from. Usage is computed here from the Service statuses and the ConfigMaps,
so the command works without reaching the controller.

ANNOUNCED-BY is the speakers' per-IP election (``speaker.layer2.plan``) recomputed here over Nodes,
EndpointSlices and the speaker Leases, counting a speaker alive while its Lease is current. The
speakers themselves also use heartbeats, so for up to one Lease duration after a node dies this
column can still name it; the output says so.
"""

from __future__ import annotations

import argparse
import ipaddress
import time
from collections.abc import Sequence

from controller.allocator import Allocator, Assignment
from controller.reconcile import pool_specs
from controller.service import BadAnnotation, service_request
from lbspeaker.config import Config
from lbspeaker.config.cluster import config_sources, load_config
from lbspeaker.kube.client import load_api_client
from lbspeaker.kube.rest import JSON, Rest, path_for
from lbspeaker.objects import is_load_balancer, node_view, services_from_cache, status_ips
from lbspeaker.speaker import layer2
from lbspeaker.speaker.lease import Link, speaker_lease

LEASE_NOTE = ("ANNOUNCED-BY: the per-IP election recomputed from speaker Leases (alive = Lease current); "
              "speakers also use heartbeats, so it can lag a failure by up to one Lease duration")


def table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def announced_by(cfg: Config | None, services: list[JSON], nodes: list[JSON], slices: list[JSON],
                 leases: list[JSON], wall_now: float, lb_class: str | None) -> dict[str, str]:
    """ip -> owner node (layer2), ``bgp``, or ``<none>``: the speakers' election over current Leases."""
    alive: set[str] = set()
    links: dict[str, Link] = {}
    for lease in leases:
        view = speaker_lease(lease)
        if view is None:
            continue
        if view.holder and not view.left and view.renew_time is not None and view.renew_time + view.duration > wall_now:
            alive.add(view.node)
        links[view.node] = view.link
    views = {v.name: v for v in (node_view(n) for n in nodes)}
    plan = layer2.plan(cfg, services_from_cache(services, slices, lb_class), views, links, alive)
    out = {ip: d.owner or "<none>" for ip, d in plan.l2.items()}
    out.update({ip: "bgp" for ip in plan.bgp})
    return out


def render(configmaps: list[JSON], services: list[JSON], *, config_name: str = "config",
           lb_class: str | None = None, nodes: list[JSON] | None = None, slices: list[JSON] | None = None,
           leases: list[JSON] | None = None, wall_now: float | None = None) -> str:
    """The status text; the ANNOUNCED-BY column only when ``leases`` (and nodes, slices) are given."""
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
    owners: dict[str, str] | None = None
    if leases is not None:
        owners = announced_by(cfg, services, nodes or [], slices or [], leases,
                              time.time() if wall_now is None else wall_now, lb_class)
    rows = [["NAMESPACE", "NAME", "EXTERNAL-IP", "POOL"] + (["ANNOUNCED-BY"] if owners is not None else [])]
    for svc in lbs:
        ips = status_ips(svc)
        row = [svc["metadata"].get("namespace", ""), svc["metadata"]["name"],
               ",".join(ips) or "<pending>", pools.get(_key(svc), "-" if not ips else "?")]
        if owners is not None:
            row.append(",".join(owners.get(_canonical(ip), "-") for ip in ips) or "-")
        rows.append(row)
    out.append("")
    out.append(table(rows))
    if owners is not None:
        out.append("")
        out.append(LEASE_NOTE)
    return "\n".join(out)


def _canonical(ip: str) -> str:
    try:
        return str(ipaddress.ip_address(ip))
    except ValueError:
        return ip


def _key(svc: JSON) -> str:
    return f"{svc['metadata'].get('namespace')}/{svc['metadata']['name']}"


def run(args: argparse.Namespace) -> int:
    rest = Rest(load_api_client(args.kubeconfig))
    cms = rest.get(path_for("v1", "configmaps", args.namespace)).get("items") or []
    svcs = rest.get(path_for("v1", "services")).get("items") or []
    nodes = rest.get(path_for("v1", "nodes")).get("items") or []
    slices = rest.get(path_for("discovery.k8s.io/v1", "endpointslices")).get("items") or []
    leases = rest.get(path_for("coordination.k8s.io/v1", "leases", args.namespace)).get("items") or []
    print(render(cms, svcs, config_name=args.config_name, lb_class=args.lb_class, nodes=nodes, slices=slices,
                 leases=leases))
    return 0
