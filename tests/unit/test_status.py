"""`lbspeaker status` computed from API objects: usage, who announces each IP (the speakers' reports,
else the election over the Leases), and why nobody does."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from lbspeaker import election
from lbspeaker.objects import SERVICE_NAME_LABEL
from lbspeaker.speaker.eligibility import EXCLUDE_LABEL
from lbspeaker.speaker.lease import INTERFACES_UP_ANNOTATION, SUBNETS_ANNOTATION
from lbspeaker.status import SOURCE_NOTE, ClusterState, render, speaker_reports

NOW = 1767225600.0  # 2026-01-01T00:00:00Z
ALL = ("node1", "node2", "node3")
POOLS = """address-pools:
- name: l2
  protocol: layer2
  addresses: [192.0.2.200-192.0.2.250, 2001:db8::1000/120]
- name: racked
  protocol: layer2
  addresses: [192.0.2.100-192.0.2.110]
  node-selectors:
  - match-labels: {rack: a}
- name: far
  protocol: layer2
  addresses: [203.0.113.0/28]
- name: routed
  protocol: bgp
  addresses: [198.51.100.0/28]
"""


def stamp(t: float, micro: bool = False) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ" if micro else "%Y-%m-%dT%H:%M:%SZ")


def configmap(text: str = POOLS) -> dict[str, Any]:
    return {"metadata": {"name": "config", "namespace": "lbspeaker-system"}, "data": {"config": text}}


def service(name: str, *ips: str, local: bool = False, uid: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"type": "LoadBalancer"}
    if local:
        spec["externalTrafficPolicy"] = "Local"
    return {"metadata": {"namespace": "app", "name": name, "uid": uid or f"uid-{name}"}, "spec": spec,
            "status": {"loadBalancer": {"ingress": [{"ip": ip} for ip in ips]}}}


def endpoints(name: str, *nodes: str, ready: bool = True) -> dict[str, Any]:
    return {"metadata": {"namespace": "app", "name": f"{name}-1", "labels": {SERVICE_NAME_LABEL: name}},
            "endpoints": [{"nodeName": n, "conditions": {"ready": ready}} for n in nodes]}


def node(name: str, **labels: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels}, "status": {}}


def lease(name: str, renewed: float = NOW - 1, subnets: str = "192.0.2.0/24,2001:db8::/64",
          up: bool = True) -> dict[str, Any]:
    return {"metadata": {"name": f"speaker-{name}", "namespace": "lbspeaker-system",
                         "annotations": {SUBNETS_ANNOTATION: subnets, INTERFACES_UP_ANNOTATION: str(up).lower()}},
            "spec": {"holderIdentity": name, "renewTime": stamp(renewed, micro=True), "leaseDurationSeconds": 10}}


def report(svc: str, node_name: str, seen: float, *, uid: str | None = None, reason: str = "nodeAssigned",
           component: str = "lbspeaker-speaker") -> dict[str, Any]:
    """An Event as ``lbspeaker.kube.events.EventRecorder`` writes it for a speaker."""
    return {"metadata": {"namespace": "app", "name": f"{svc}.{node_name}"},
            "involvedObject": {"apiVersion": "v1", "kind": "Service", "namespace": "app", "name": svc,
                               "uid": uid or f"uid-{svc}"},
            "reason": reason, "message": f"announcing from node {node_name!r}, layer2, interface eth0",
            "type": "Normal", "source": {"component": component, "host": node_name},
            "firstTimestamp": stamp(seen - 300), "lastTimestamp": stamp(seen), "count": 2,
            "reportingComponent": component, "reportingInstance": node_name}


def state(services: list[dict[str, Any]], slices: list[dict[str, Any]], *, events: list[dict[str, Any]] | None = None,
          nodes: list[dict[str, Any]] | None = None, leases: list[dict[str, Any]] | None = None,
          cms: list[dict[str, Any]] | None = None) -> ClusterState:
    return ClusterState(configmaps=[configmap()] if cms is None else cms, services=services,
                        nodes=[node(n) for n in ALL] if nodes is None else nodes, slices=slices,
                        leases=[lease(n) for n in ALL] if leases is None else leases,
                        events=[] if events is None else events)


def rows(st: ClusterState) -> dict[str, tuple[str, str]]:
    """EXTERNAL-IP -> (ANNOUNCED-BY, DETAIL) from the rendered text."""
    text = render(st, wall_now=NOW)
    lines = text.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("NAMESPACE"))
    by, detail = lines[head].index("ANNOUNCED-BY"), lines[head].index("DETAIL")
    out = {}
    for line in lines[head + 1:]:
        if not line.strip():
            break
        out[line.split()[2]] = (line[by:detail].strip(), line[detail:].strip())
    return out


IP = "192.0.2.201"


def test_the_last_reporter_announces_even_while_the_old_owners_lease_is_current() -> None:
    old = election.owner(IP, ALL)
    new = election.owner(IP, [n for n in ALL if n != old])
    assert old is not None and new is not None
    st = state([service("web", IP)], [endpoints("web", *ALL)],
               events=[report("web", old, NOW - 60), report("web", new, NOW - 2)])
    # Every Lease is current: the election alone still names the dead owner.
    assert rows(st)[IP] == (new, "reported 2s ago")
    assert SOURCE_NOTE in render(st, wall_now=NOW)


def test_without_a_report_the_election_is_shown_and_said_to_be_one() -> None:
    st = state([service("web", IP)], [endpoints("web", *ALL)])
    assert rows(st)[IP] == (election.owner(IP, ALL), "elected; no report")


def test_only_current_leases_count_for_the_election() -> None:
    gone = election.owner(IP, ALL)
    leases = [lease(n, NOW - (3600 if n == gone else 1)) for n in ALL]
    st = state([service("web", IP)], [endpoints("web", *ALL)], leases=leases)
    assert rows(st)[IP][0] == election.owner(IP, [n for n in ALL if n != gone])


def test_a_report_from_a_node_no_longer_eligible_is_not_believed() -> None:
    gone = election.owner(IP, ALL)
    assert gone is not None
    leases = [lease(n, NOW - (3600 if n == gone else 1)) for n in ALL]
    st = state([service("web", IP)], [endpoints("web", *ALL)], leases=leases, events=[report("web", gone, NOW - 5)])
    by, detail = rows(st)[IP]
    assert by == election.owner(IP, [n for n in ALL if n != gone])
    assert detail == f"elected; the last report, from {gone} 5s ago, is from a node no longer eligible"


def test_reports_of_other_sources_reasons_and_earlier_services_are_ignored() -> None:
    other = next(n for n in ALL if n != election.owner(IP, ALL))
    events = [report("web", other, NOW - 1, component="someone-else"),
              report("web", other, NOW - 1, reason="IPAllocated"),
              report("web", other, NOW - 1, uid="uid-of-a-deleted-web")]
    st = state([service("web", IP)], [endpoints("web", *ALL)], events=events)
    assert rows(st)[IP] == (election.owner(IP, ALL), "elected; no report")


def test_each_node_counts_once_with_its_latest_time() -> None:
    events = [report("web", "node1", NOW - 50), report("web", "node1", NOW - 5), report("web", "node2", NOW - 20)]
    got = speaker_reports(events, [service("web", IP)])["app/web"]
    assert [(r.node, r.seen) for r in got] == [("node1", NOW - 5), ("node2", NOW - 20)]


def test_event_series_time_counts_as_last_seen() -> None:
    ev = report("web", "node1", NOW - 500)
    ev["series"] = {"count": 3, "lastObservedTime": stamp(NOW - 3, micro=True)}
    got = speaker_reports([ev], [service("web", IP)])["app/web"]
    assert got[0].seen == pytest.approx(NOW - 3)


def test_dual_stack_a_report_by_the_owner_of_the_other_ip_is_about_that_ip() -> None:
    v4, v6 = "192.0.2.202", "2001:db8::1002"
    o4, o6 = election.owner(v4, ALL), election.owner(v6, ALL)
    if o4 == o6:
        pytest.fail("pick addresses with different owners")
    st = state([service("dual", v4, v6)], [endpoints("dual", *ALL)],
               events=[report("dual", str(o4), NOW - 10), report("dual", str(o6), NOW - 9)])
    assert rows(st)[v4] == (o4, "reported 10s ago")
    assert rows(st)[v6] == (o6, "reported 9s ago")


def test_bgp_ips_are_announced_by_every_eligible_node() -> None:
    ip = "198.51.100.3"
    st = state([service("routed", ip)], [endpoints("routed", *ALL)],
               events=[report("routed", "node1", NOW - 4), report("routed", "node2", NOW - 7)])
    assert rows(st)[ip] == ("node1,node2,node3", "bgp, reported 4s ago; no report from node3")


@pytest.mark.parametrize(("why", "objects", "expected"), [
    ("no endpoint ready", dict(slices=[endpoints("web", *ALL, ready=False)]), "no ready endpoint"),
    ("no endpoints at all", dict(slices=[]), "no ready endpoint"),
    ("no speaker runs", dict(leases=[]), "no speaker running (no current speaker Lease)"),
    ("every Lease lapsed", dict(leases=[lease(n, NOW - 3600) for n in ALL]),
     "no speaker running (no current speaker Lease)"),
])
def test_why_nobody_announces_service_wide(why: str, objects: dict[str, Any], expected: str) -> None:
    kw: dict[str, Any] = {"slices": [endpoints("web", *ALL)], **objects}
    st = state([service("web", IP)], kw.pop("slices"), **kw)
    assert rows(st)[IP] == ("<none>", expected), why


def test_why_nobody_local_endpoints_on_a_missing_node_and_a_node_without_a_speaker() -> None:
    st = state([service("web", IP, local=True)], [endpoints("web", "ghost", "node3")],
               leases=[lease("node1"), lease("node2")])
    assert rows(st)[IP] == ("<none>", "no eligible node (no ready endpoint on the node: node1,node2; "
                                      "no speaker (no current speaker Lease): node3; "
                                      "node missing (no Node object): ghost)")


def test_why_nobody_excluded_and_unselected_nodes() -> None:
    nodes = [node("node1", **{EXCLUDE_LABEL: ""}), node("node2", rack="b"), node("node3", rack="b")]
    st = state([service("web", "192.0.2.101")], [endpoints("web", *ALL)], nodes=nodes)
    assert rows(st)["192.0.2.101"] == (
        "<none>", f"no eligible node (labelled {EXCLUDE_LABEL}: node1; "
                  "not selected by pool racked's node-selectors: node2,node3)")


def test_why_nobody_no_speaker_with_an_endpoint_on_the_subnet() -> None:
    # node1 has the subnet but no endpoint; node2 and node3 have endpoints but not the subnet.
    leases = [lease("node1"), lease("node2", subnets="198.51.100.0/24"), lease("node3", subnets="198.51.100.0/24")]
    st = state([service("web", IP, local=True)], [endpoints("web", "node2", "node3")], leases=leases)
    assert rows(st)[IP] == ("<none>", "no speaker on the IP's subnet may announce it (no interface on the IP's "
                                      "subnet: node2,node3; no ready endpoint on the node: node1)")


def test_off_subnet_pools_need_a_node_with_an_up_interface() -> None:
    leases = [lease(n, subnets="", up=False) for n in ALL]
    st = state([service("far", "203.0.113.3")], [endpoints("far", *ALL)], leases=leases)
    assert rows(st)["203.0.113.3"] == ("<none>", "no eligible node (no up interface: node1,node2,node3)")
    leases[1] = lease("node2", subnets="", up=True)
    st = state([service("far", "203.0.113.3")], [endpoints("far", *ALL)], leases=leases)
    assert rows(st)["203.0.113.3"] == ("node2", "elected; no report")


def test_ips_in_no_pool_pending_services_and_a_missing_config() -> None:
    st = state([service("lost", "192.0.2.9"), service("wait")], [endpoints("lost", *ALL)])
    got = rows(st)
    assert got["192.0.2.9"] == ("<none>", "in no pool") and got["<pending>"] == ("-", "")
    st = state([service("web", IP)], [endpoints("web", *ALL)], cms=[])
    text = render(st, wall_now=NOW)
    assert text.startswith("configuration: missing: no ConfigMap config (nor one labelled lbspeaker.io/config) "
                           "in namespace lbspeaker-system")
    assert rows(st)[IP] == ("<none>", "no valid configuration")


def test_an_invalid_configuration_still_shows_the_reports() -> None:
    # The speakers keep their last good configuration, so what they report still holds.
    bad = configmap("address-pools:\n- name: l2\n  protocol: layer3\n  addresses: [192.0.2.0/24]\n")
    st = state([service("web", IP), service("quiet", "192.0.2.202")], [endpoints("web", *ALL)], cms=[bad],
               events=[report("web", "node2", NOW - 3)])
    text = render(st, wall_now=NOW)
    assert text.startswith("configuration: invalid: ") and "layer3" in text.splitlines()[0]
    assert rows(st)[IP] == ("node2", "reported 3s ago; no valid configuration to check it against")
    assert rows(st)["192.0.2.202"] == ("<none>", "no valid configuration")


def test_usage_per_pool_and_family() -> None:
    st = state([service("web", IP), service("dual", "192.0.2.202", "2001:db8::1002")], [])
    lines = render(st, wall_now=NOW).splitlines()
    l2 = [line.split() for line in lines if line.startswith("l2 ")]
    assert l2 == [["l2", "layer2", "IPv4", "2", "51"], ["l2", "layer2", "IPv6", "1", "256"]]


def test_events_not_readable_are_said() -> None:
    st = state([service("web", IP)], [endpoints("web", *ALL)])
    st.events, st.events_problem = None, "the speakers' reports are not shown: Events cannot be listed (Forbidden)"
    text = render(st, wall_now=NOW)
    assert rows(st)[IP] == (election.owner(IP, ALL), "elected; no report")
    assert text.endswith("Events cannot be listed (Forbidden)")


def test_bfd_sessions_the_speakers_publish_are_listed() -> None:
    from lbspeaker.speaker.lease import BFD_ANNOTATION

    leases = [lease(n) for n in ALL]
    leases[0]["metadata"]["annotations"][BFD_ANNOTATION] = "192.0.2.1=up,2001:db8::1=down"
    text = render(state([], [], leases=leases), wall_now=NOW)
    lines = [line.split() for line in text.splitlines()]
    assert ["node1", "192.0.2.1", "up"] in lines and ["node1", "2001:db8::1", "down"] in lines
    assert "BFD PEER" not in render(state([], []), wall_now=NOW)
