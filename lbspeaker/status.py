"""`lbspeaker status`: what the cluster looks like to lbspeaker, read straight from the API.

Three parts:

* pools with used/total addresses per family, computed here from the Service statuses and the
  ConfigMaps (the command works without reaching the controller);
* one row per external IP of every LoadBalancer Service: its pool, the node(s) announcing it and a
  detail;
* a note on where ANNOUNCED-BY comes from.

ANNOUNCED-BY is what the speakers themselves report: the ``nodeAssigned`` Events they write on a
Service when they start announcing it (reason ``nodeAssigned``, source ``lbspeaker-speaker``, host the
node), with the time each was last seen. A layer 2 IP is announced by the node that reported last (a
speaker reports each takeover); a bgp IP by every eligible node. The speakers' election is also
recomputed here (``elect``: ``speaker.layer2.plan`` over Nodes, EndpointSlices and the speaker Leases,
a speaker counting as alive while its Lease is current): it tells why nobody announces an IP (no
ready endpoint, no eligible node, node missing, no speaker on the subnet; the rules are those of
``speaker.eligibility``), and it names the elected node when no speaker has reported (Events expire,
after one hour by default). The Leases lag a failure by up to one Lease duration, which is why a
report is preferred over the election.

Cost: six list requests (paged), then O(Services x nodes) work.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from controller.allocator import Allocator, Assignment
from controller.reconcile import pool_specs
from controller.service import BadAnnotation, service_request
from lbspeaker.cmdline import CommandError, api_error_line
from lbspeaker.config import AddressPool, Config
from lbspeaker.config.cluster import CONFIG_LABEL, config_sources, load_config
from lbspeaker.kube.client import load_api_client
from lbspeaker.kube.rest import JSON, ApiError, Rest, path_for
from lbspeaker.kube.timefmt import parse_time
from lbspeaker.objects import NodeView, ServiceView, is_load_balancer, node_view, services_from_cache, status_ips
from lbspeaker.speaker import eligibility, layer2
from lbspeaker.speaker.lease import BFD_ANNOTATION, Link, parse_bfd_annotation, speaker_lease

REPORT_REASON = "nodeAssigned"
REPORT_SOURCE = "lbspeaker-speaker"

SOURCE_NOTE = ("ANNOUNCED-BY: as the speakers report it (nodeAssigned Events on the Service, with the time "
               "last seen); where no speaker has reported, the election recomputed from the speaker Leases, "
               "which can lag a failure by up to one Lease duration.")
MAX_NAMES = 4  # node names shown in one cell before "+N more"


# -- reading ---------------------------------------------------------------------------------------------


@dataclass
class ClusterState:
    """Everything the status is computed from, as the API returned it."""

    configmaps: list[JSON]
    services: list[JSON]
    nodes: list[JSON] = field(default_factory=list)
    slices: list[JSON] = field(default_factory=list)
    leases: list[JSON] = field(default_factory=list)
    events: list[JSON] | None = None  # None: not readable (``events_problem`` says why)
    events_problem: str = ""


def list_all(rest: Rest, path: str, **query: str) -> list[JSON]:
    """Every item of a list, 500 per request."""
    items: list[JSON] = []
    cont: str | None = None
    while True:
        page = rest.get(path, limit=500, **({"continue": cont} if cont else {}), **query)
        items += page.get("items") or []
        cont = (page.get("metadata") or {}).get("continue") or None
        if not cont:
            return items


def read_cluster(rest: Rest, namespace: str) -> ClusterState:
    state = ClusterState(
        configmaps=list_all(rest, path_for("v1", "configmaps", namespace)),
        services=list_all(rest, path_for("v1", "services")),
        nodes=list_all(rest, path_for("v1", "nodes")),
        slices=list_all(rest, path_for("discovery.k8s.io/v1", "endpointslices")),
        leases=list_all(rest, path_for("coordination.k8s.io/v1", "leases", namespace)),
    )
    try:
        state.events = list_all(rest, path_for("v1", "events"),
                                fieldSelector=f"reason={REPORT_REASON},source={REPORT_SOURCE}")
    except ApiError as exc:
        if exc.status not in (401, 403):
            raise
        # Without read access to Events the election alone is shown, and the note says so.
        state.events_problem = f"the speakers' reports are not shown: Events cannot be listed ({exc.reason})"
    return state


# -- the speakers' own reports ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Report:
    """One speaker's ``nodeAssigned`` Event on one Service: who, and when it was last seen."""

    node: str
    seen: float  # seconds since the epoch
    message: str


def event_seen(event: JSON) -> float | None:
    """When an Event was last seen: the latest of its timestamps (core/v1 and events.k8s.io writers differ)."""
    series = event.get("series") or {}
    stamps = (series.get("lastObservedTime"), event.get("lastTimestamp"), event.get("eventTime"),
              event.get("firstTimestamp"), (event.get("metadata") or {}).get("creationTimestamp"))
    times = [t for t in (parse_time(s) if isinstance(s, str) else None for s in stamps) if t is not None]
    return max(times) if times else None


def speaker_reports(events: Iterable[JSON], services: Iterable[JSON]) -> dict[str, list[Report]]:
    """Service key -> the speakers' reports on it, newest first, one per node (its latest).

    Only Events from ``lbspeaker-speaker`` with reason ``nodeAssigned`` about a Service that exists now
    (same uid, when both carry one: a Service recreated under the same name starts afresh).
    """
    uids = {f"{(s.get('metadata') or {}).get('namespace')}/{(s.get('metadata') or {}).get('name')}":
            (s.get("metadata") or {}).get("uid") for s in services}
    latest: dict[str, dict[str, Report]] = {}
    for ev in events:
        source = ev.get("source") or {}
        if ev.get("reason") != REPORT_REASON or (source.get("component") or ev.get("reportingComponent")) \
                != REPORT_SOURCE:
            continue
        inv = ev.get("involvedObject") or {}
        if inv.get("kind") not in (None, "", "Service"):
            continue
        key = f"{inv.get('namespace')}/{inv.get('name')}"
        if key not in uids or (inv.get("uid") and uids[key] and inv.get("uid") != uids[key]):
            continue
        node = str(source.get("host") or ev.get("reportingInstance") or "")
        seen = event_seen(ev)
        if not node or seen is None:
            continue
        per_node = latest.setdefault(key, {})
        if node not in per_node or per_node[node].seen < seen:
            per_node[node] = Report(node, seen, str(ev.get("message") or ""))
    return {key: sorted(per_node.values(), key=lambda r: (-r.seen, r.node)) for key, per_node in latest.items()}


# -- the election, recomputed ----------------------------------------------------------------------------


def speaker_liveness(leases: Iterable[JSON], wall_now: float) -> tuple[frozenset[str], dict[str, Link]]:
    """(nodes whose speaker Lease is current, every speaker's published data path) from the Leases."""
    alive: set[str] = set()
    links: dict[str, Link] = {}
    for lease in leases:
        view = speaker_lease(lease)
        if view is None:
            continue
        if view.holder and not view.left and view.renew_time is not None and view.renew_time + view.duration > wall_now:
            alive.add(view.node)
        links[view.node] = view.link
    return frozenset(alive), links


def elect(cfg: Config | None, services: Sequence[ServiceView], nodes: Mapping[str, NodeView],
          links: Mapping[str, Link], alive: frozenset[str]) -> layer2.Plan:
    """The speakers' own computation of who announces what, over what status could read."""
    return layer2.plan(cfg, services, nodes, links, alive)


# -- why nobody announces an IP --------------------------------------------------------------------------


def why_nobody(ip: str, pool: AddressPool, services: Sequence[ServiceView], nodes: Mapping[str, NodeView],
               links: Mapping[str, Link], alive: frozenset[str]) -> str:
    """Why no node is eligible for ``ip`` (of ``pool``, in the status of ``services``): the first rule of
    ``speaker.eligibility`` each candidate node fails, grouped by rule."""
    if not alive:
        return "no speaker running (no current speaker Lease)"
    for svc in services:
        if not svc.any_ready or (svc.local and not svc.ready_nodes):
            return f"no ready endpoint ({svc.key})" if len(services) > 1 else "no ready endpoint"
    addr = ipaddress.ip_address(ip)
    candidates = set(alive) | set(links)  # live speakers, and those whose Lease lapsed
    for svc in services:
        if svc.local:
            candidates |= svc.ready_nodes
    subnet_taken = pool.protocol == "layer2" and _subnet_taken(addr, pool, nodes, links, alive)
    reasons: dict[str, list[str]] = {}
    for name in sorted(candidates):
        why = _node_refusal(name, pool, services, nodes, alive)
        if why is None and pool.protocol == "layer2":
            # Passed every rule but the data path one (else it would be eligible).
            why = "no interface on the IP's subnet" if subnet_taken else "no up interface"
        if why is not None:
            reasons.setdefault(why, []).append(name)
    off_subnet = "no interface on the IP's subnet" in reasons
    head = "no speaker on the IP's subnet may announce it" if off_subnet else "no eligible node"
    detail = "; ".join(f"{why}: {_names(names)}" for why, names in sorted(reasons.items()))
    return f"{head} ({detail})" if detail else head


def _node_refusal(name: str, pool: AddressPool, services: Sequence[ServiceView], nodes: Mapping[str, NodeView],
                  alive: frozenset[str]) -> str | None:
    """The first rule ``name`` fails before the subnet rule, or None."""
    view = nodes.get(name)
    if view is None:
        return "node missing (no Node object)"
    if name not in alive:
        return "no speaker (no current speaker Lease)"
    excluded = eligibility.excluded(view)
    if excluded:
        return excluded
    if not eligibility.pool_selects(pool, view.labels):
        return f"not selected by pool {pool.name}'s node-selectors"
    if not all(eligibility.endpoints_allow(svc, name) for svc in services):
        return "no ready endpoint on the node"
    return None


def _subnet_taken(addr: eligibility.Address, pool: AddressPool, nodes: Mapping[str, NodeView],
                  links: Mapping[str, Link], alive: frozenset[str]) -> bool:
    """Whether some live node of the pool has the IP's subnet (then only such nodes may announce it)."""
    return any(eligibility.on_subnet(addr, links.get(n)) for n in alive
               if n in nodes and eligibility.excluded(nodes[n]) is None
               and eligibility.pool_selects(pool, nodes[n].labels))


def _names(names: Sequence[str]) -> str:
    shown = ",".join(names[:MAX_NAMES])
    return shown + (f" +{len(names) - MAX_NAMES} more" if len(names) > MAX_NAMES else "")


# -- one cell per IP -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Announced:
    by: str      # node name(s), or "<none>"
    detail: str  # when reported, or why nobody announces the IP


def announced(ip: str, key: str, plan: layer2.Plan, reports: Mapping[str, list[Report]],
              views: Mapping[str, ServiceView], cfg: Config | None, nodes: Mapping[str, NodeView],
              links: Mapping[str, Link], alive: frozenset[str], wall_now: float) -> Announced:
    """Who announces ``ip`` (in the status of Service ``key``), per the speakers' reports, else the
    election; or why nobody does."""
    if cfg is None:
        # The speakers keep their last good configuration: their reports still say who announces.
        latest = reports.get(key)
        if latest:
            return Announced(latest[0].node, f"reported {_ago(wall_now - latest[0].seen)}; no valid configuration "
                                             "to check it against")
        return Announced("<none>", "no valid configuration")
    if ip in plan.unknown:
        return Announced("<none>", "in no pool")
    decision = plan.l2.get(ip) or plan.bgp.get(ip)
    if decision is None:
        return Announced("-", "")
    pool = next(p for p in cfg.address_pools if p.name == decision.pool)
    services = [views[k] for k in decision.services if k in views]
    if not decision.eligible:
        return Announced("<none>", why_nobody(ip, pool, services, nodes, links, alive))
    got = sorted((r for k in decision.services for r in reports.get(k, [])), key=lambda r: (-r.seen, r.node))
    if decision.protocol == "bgp":
        names = sorted(decision.eligible)
        heard = [r for r in got if r.node in decision.eligible]
        silent = [n for n in names if n not in {r.node for r in heard}]
        detail = f"bgp, reported {_ago(wall_now - heard[0].seen)}" if heard else "bgp, elected; no report"
        if heard and silent:
            detail += f"; no report from {_names(silent)}"
        return Announced(_names(names), detail)
    # A layer 2 speaker reports each takeover of a Service, not which of its IPs: a report from the owner
    # of the Service's other IP is about that IP.
    others = {plan.l2[o].owner for k in decision.services if k in views for o in views[k].ips
              if o != ip and o in plan.l2} - {decision.owner}
    mine = [r for r in got if r.node not in others]
    if mine and mine[0].node in decision.eligible:
        return Announced(mine[0].node, f"reported {_ago(wall_now - mine[0].seen)}")
    owner = decision.owner or "<none>"
    if mine:
        return Announced(owner, f"elected; the last report, from {mine[0].node} {_ago(wall_now - mine[0].seen)}, "
                                "is from a node no longer eligible")
    return Announced(owner, "elected; no report")


def _ago(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 120:
        return f"{s}s ago"
    if s < 7200:
        return f"{s // 60}m ago"
    return f"{s // 3600}h ago"


# -- the text --------------------------------------------------------------------------------------------


def table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def render(state: ClusterState, *, config_name: str = "config", lb_class: str | None = None,
           namespace: str = "lbspeaker-system", wall_now: float | None = None) -> str:
    """The status text."""
    now = time.time() if wall_now is None else wall_now
    sources = config_sources(state.configmaps, config_name)
    cfg, errors = load_config(sources) if sources else (None, [])
    out: list[str] = []
    if not sources:
        out.append(f"configuration: missing: no ConfigMap {config_name} (nor one labelled {CONFIG_LABEL}) "
                   f"in namespace {namespace}")
    elif cfg is None:
        out.append("configuration: invalid: " + "; ".join(e for _, e in errors))
    alloc = Allocator(pool_specs(cfg) if cfg else [])
    lbs = sorted((s for s in state.services if is_load_balancer(s, lb_class)),
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

    alive, links = speaker_liveness(state.leases, now)
    views = {v.key: v for v in services_from_cache(state.services, state.slices, lb_class)}
    nodes = {v.name: v for v in (node_view(n) for n in state.nodes)}
    plan = elect(cfg, list(views.values()), nodes, links, alive)
    reports = speaker_reports(state.events or [], state.services)
    rows = [["NAMESPACE", "NAME", "EXTERNAL-IP", "POOL", "ANNOUNCED-BY", "DETAIL"]]
    for svc in lbs:
        meta = svc["metadata"]
        ips = status_ips(svc)
        pool = pools.get(_key(svc), "?")
        if not ips:
            rows.append([meta.get("namespace", ""), meta["name"], "<pending>", "-", "-", ""])
        for ip in ips:
            cell = announced(_canonical(ip), _key(svc), plan, reports, views, cfg, nodes, links, alive, now)
            rows.append([meta.get("namespace", ""), meta["name"], ip, pool, cell.by, cell.detail])
    out += ["", table(rows), "", SOURCE_NOTE]
    if state.events_problem:
        out.append(state.events_problem)
    bfd = bfd_sessions(state.leases)
    if bfd:
        out += ["", table([["NODE", "BFD PEER", "STATE"], *bfd]),
                "BFD: as each speaker last wrote it in its Lease (at its next renewal after a change)"]
    return "\n".join(out)


def bfd_sessions(leases: Iterable[JSON]) -> list[list[str]]:
    """(node, peer, state) of every BFD session the speakers publish in their Leases."""
    rows: list[list[str]] = []
    for lease in leases:
        view = speaker_lease(lease)
        if view is None or view.left:
            continue
        text = str(((lease.get("metadata") or {}).get("annotations") or {}).get(BFD_ANNOTATION) or "")
        rows += [[view.node, peer, st] for peer, st in sorted(parse_bfd_annotation(text).items())]
    return sorted(rows)


def _canonical(ip: str) -> str:
    try:
        return str(ipaddress.ip_address(ip))
    except ValueError:
        return ip


def _key(svc: JSON) -> str:
    return f"{svc['metadata'].get('namespace')}/{svc['metadata']['name']}"


def run(args: argparse.Namespace) -> int:
    rest = Rest(load_api_client(args.kubeconfig))
    try:
        state = read_cluster(rest, args.namespace)
    except ApiError as exc:
        source = args.kubeconfig or os.environ.get("KUBECONFIG")
        line = api_error_line(exc, rest.host)
        raise CommandError(line + (f" (kubeconfig {source})" if source else "")) from exc
    print(render(state, config_name=args.config_name, lb_class=args.lb_class, namespace=args.namespace))
    return 0
