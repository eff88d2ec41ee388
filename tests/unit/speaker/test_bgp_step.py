"""The speaker's BGP protocol (``lbspeaker.speaker.bgp.BgpProtocol``) with a fake BgpSpeaker factory: peers
and routes from the snapshot reach the BGP layer, new announcements become Events, passwords come from
the snapshot's Secrets (never read from the API in the loop), a missing Secret is logged and reported
once on the config ConfigMap, and a pass that changed only liveness leaves BGP alone."""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pytest

from lbspeaker.bgp.model import Advertisement, BgpPeer, SessionState
from lbspeaker.config import Config, parse_config
from lbspeaker.objects import node_view, services_from_cache
from lbspeaker.speaker.bgp import BgpProtocol, node_ipv4, secret_values
from lbspeaker.speaker.bgp_announcer import BgpAnnouncer, SpeakerLike
from lbspeaker.speaker.protocol import Changes, Snapshot

EVERYTHING = Changes(everything=True)

PASSWORD = "s3cret-test-pw"  # a test value: must never appear in logs or Events

CONFIG = """\
address-pools:
- name: bgp
  protocol: bgp
  addresses: [203.0.113.0/28]
- name: l2
  protocol: layer2
  addresses: [192.0.2.100-192.0.2.120]
peers:
- peer-address: 192.0.2.1
  peer-asn: 64501
  my-asn: 64500
"""

SECRET_PEER = """\
- peer-address: 192.0.2.3
  peer-asn: 64502
  my-asn: 64500
  password-secret: {name: bgp-auth, key: pw}
"""

CONFIG_MAP = {"apiVersion": "v1", "kind": "ConfigMap",
              "metadata": {"name": "config", "namespace": "lbspeaker-system", "uid": "cm-uid"}}


class FakeSpeaker:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def start(self) -> None:
        self.calls.append(("start", None))

    def stop(self, graceful: bool) -> None:
        self.calls.append(("stop", graceful))

    def set_peers(self, peers: Sequence[BgpPeer]) -> None:
        self.calls.append(("set_peers", tuple(peers)))

    def set_routes(self, routes: Iterable[Advertisement]) -> None:
        self.calls.append(("set_routes", tuple(sorted(r.prefix for r in routes))))

    def sessions(self) -> dict[str, SessionState]:
        return {}

    def stats(self) -> dict[str, int]:
        return {}

    def last(self, what: str) -> Any:
        return [arg for name, arg in self.calls if name == what][-1]


class Factory:
    def __init__(self) -> None:
        self.made: list[FakeSpeaker] = []

    def __call__(self) -> SpeakerLike:
        self.made.append(FakeSpeaker())
        return self.made[-1]


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str, str]] = []  # (object name, type, reason, message)

    def record(self, obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        self.events.append((obj["metadata"]["name"], type_, reason, message))


class Secrets:
    """The namespace's Secrets as the loop's cache holds them."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}

    def put(self, name: str, **data: str) -> None:
        self.objects[name] = {"metadata": {"name": name},
                              "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}

    def decoded(self) -> dict[str, dict[str, str]]:
        return {name: secret_values(obj) for name, obj in self.objects.items()}


def node(name: str = "n1", labels: dict[str, str] | None = None, ips: Sequence[str] = ("198.51.100.11",),
         excluded: bool = False) -> dict[str, Any]:
    meta_labels = dict(labels or {})
    if excluded:
        meta_labels["node.kubernetes.io/exclude-from-external-load-balancers"] = ""
    return {"metadata": {"name": name, "labels": meta_labels},
            "status": {"addresses": [{"type": "InternalIP", "address": ip} for ip in ips]}}


def svc(name: str, ip: str, policy: str = "Cluster") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "apps"},
            "spec": {"type": "LoadBalancer", "externalTrafficPolicy": policy},
            "status": {"loadBalancer": {"ingress": [{"ip": ip}]}}}


def eps(service: str, node_name: str) -> dict[str, Any]:
    return {"metadata": {"name": f"{service}-x", "namespace": "apps",
                         "labels": {"kubernetes.io/service-name": service}},
            "endpoints": [{"addresses": ["10.244.0.1"], "nodeName": node_name, "conditions": {"ready": True}}]}


def snapshot(cfg: Config | None, node_obj: dict[str, Any] | None, services: Sequence[dict[str, Any]] = (),
             slices: Sequence[dict[str, Any]] = (), secrets: Mapping[str, Mapping[str, str]] | None = None) -> Snapshot:
    by_key = {f"apps/{s['metadata']['name']}": s for s in services}
    views = {v.key: v for v in services_from_cache(services, slices, None)}
    nodes = {} if node_obj is None else {"n1": node_view(node_obj)}
    return Snapshot(node="n1", config=cfg, nodes=nodes, services=views, links={}, alive=frozenset({"n1"}),
                    secrets=secrets or {}, raw_service=by_key.get, config_map=CONFIG_MAP)


class Rig:
    def __init__(self) -> None:
        self.factory = Factory()
        self.recorder = Recorder()
        self.secrets = Secrets()
        self.step = BgpProtocol("n1", BgpAnnouncer("n1", self.factory),
                                recorder=self.recorder)  # type: ignore[arg-type]  # duck-typed EventRecorder
        self.services: list[dict[str, Any]] = []
        self.slices: list[dict[str, Any]] = []

    def run(self, cfg: Config | None, node_obj: dict[str, Any] | None = None, changes: Changes = EVERYTHING) -> None:
        snap = snapshot(cfg, node_obj if node_obj is not None else node(), self.services, self.slices,
                        self.secrets.decoded())
        self.step.reconcile(snap, changes)

    @property
    def speaker(self) -> FakeSpeaker:
        assert len(self.factory.made) == 1, f"expected one BGP speaker, made {len(self.factory.made)}"
        return self.factory.made[0]


@pytest.fixture
def rig() -> Rig:
    return Rig()


def test_peers_and_routes_pass_through_with_an_event_per_new_announcement(rig: Rig) -> None:
    rig.services = [svc("web", "203.0.113.5"), svc("l2", "192.0.2.101"), svc("local", "203.0.113.6", "Local")]
    rig.slices = [eps("web", "n2"), eps("l2", "n1"), eps("local", "n2")]
    rig.run(parse_config(CONFIG))
    peers = rig.speaker.last("set_peers")
    assert [(p.peer_address, p.peer_asn, p.my_asn) for p in peers] == [("192.0.2.1", 64501, 64500)]
    assert peers[0].router_id == "198.51.100.11"  # the node's IPv4 InternalIP
    assert rig.speaker.last("set_routes") == ("203.0.113.5/32",)  # Local with no local endpoint: not here
    assert ("start", None) in rig.speaker.calls
    assert rig.recorder.events == [("web", "Normal", "nodeAssigned",
                                    "announcing from node n1, bgp, peers 192.0.2.1")]

    rig.slices = [eps("web", "n2"), eps("l2", "n1"), eps("local", "n1")]
    rig.run(parse_config(CONFIG))
    assert rig.speaker.last("set_routes") == ("203.0.113.5/32", "203.0.113.6/32")
    assert [e[0] for e in rig.recorder.events] == ["web", "local"]  # web is not reported again


def test_no_peers_for_this_node_starts_no_bgp(rig: Rig) -> None:
    cfg = parse_config(CONFIG.replace("  my-asn: 64500\n", "  my-asn: 64500\n  node-selectors:\n"
                                                           "  - match-labels: {rack: r9}\n"))
    rig.services = [svc("web", "203.0.113.5")]
    rig.slices = [eps("web", "n1")]
    rig.run(cfg)
    assert rig.factory.made == []
    rig.run(cfg, node(labels={"rack": "r9"}))
    assert rig.speaker.last("set_peers")[0].peer_address == "192.0.2.1"


def test_excluded_or_unknown_node_announces_nothing_but_keeps_its_peers(rig: Rig) -> None:
    rig.services = [svc("web", "203.0.113.5")]
    rig.slices = [eps("web", "n1")]
    rig.run(parse_config(CONFIG), node(excluded=True))
    assert rig.speaker.last("set_routes") == ()
    assert rig.recorder.events == []
    rig.run(parse_config(CONFIG))
    assert rig.speaker.last("set_routes") == ("203.0.113.5/32",)


def test_password_from_secret(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    rig.secrets.put("bgp-auth", pw=PASSWORD)
    cfg = parse_config(CONFIG + SECRET_PEER)
    rig.run(cfg)
    peers = {p.peer_address: p for p in rig.speaker.last("set_peers")}
    assert peers["192.0.2.3"].password == PASSWORD
    assert peers["192.0.2.1"].password is None
    assert rig.recorder.events == []
    assert PASSWORD not in caplog.text


def test_a_rotated_secret_reaches_the_peer_and_liveness_alone_changes_nothing(rig: Rig) -> None:
    rig.secrets.put("bgp-auth", pw=PASSWORD)
    cfg = parse_config(CONFIG + SECRET_PEER)
    rig.run(cfg)
    calls = len(rig.speaker.calls)
    rig.secrets.put("bgp-auth", pw="rotated-pw")
    rig.run(cfg, changes=Changes(liveness=frozenset({"n2"})))
    assert len(rig.speaker.calls) == calls  # BGP does not care who else is alive
    rig.run(cfg, changes=Changes(secrets=True))
    assert {p.peer_address: p.password for p in rig.speaker.last("set_peers")}["192.0.2.3"] == "rotated-pw"


def test_missing_secret_is_logged_and_reported_once_per_change(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    cfg = parse_config(CONFIG + SECRET_PEER)
    with caplog.at_level(logging.ERROR, logger="lbspeaker.speaker.bgp"):
        rig.run(cfg)
        rig.run(cfg)
    assert [p.peer_address for p in rig.speaker.last("set_peers")] == ["192.0.2.1"]  # the other peer goes on
    warnings = [e for e in rig.recorder.events if e[1] == "Warning"]
    assert len(warnings) == 1
    name, _, reason, message = warnings[0]
    assert (name, reason) == ("config", "BGPPeerSkipped")
    assert "192.0.2.3" in message and "bgp-auth" in message and "not found" in message
    assert sum("bgp-auth" in r.getMessage() for r in caplog.records) == 1

    # Fixed: the peer comes back, no new Warning; missing again: reported again.
    rig.secrets.put("bgp-auth", pw=PASSWORD)
    rig.run(cfg, changes=Changes(secrets=True))
    assert {p.peer_address for p in rig.speaker.last("set_peers")} == {"192.0.2.1", "192.0.2.3"}
    del rig.secrets.objects["bgp-auth"]
    rig.run(cfg, changes=Changes(secrets=True))
    assert len([e for e in rig.recorder.events if e[1] == "Warning"]) == 2


def test_a_failing_bgp_layer_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    def broken() -> SpeakerLike:
        raise FileNotFoundError("exabgp")

    step = BgpProtocol("n1", BgpAnnouncer("n1", broken))
    with caplog.at_level(logging.ERROR, logger="lbspeaker.speaker.bgp"):
        step.reconcile(snapshot(parse_config(CONFIG), node()), EVERYTHING)
        step.reconcile(snapshot(parse_config(CONFIG), node()), EVERYTHING)
    assert len([r for r in caplog.records if "BGP step failed" in r.getMessage()]) == 1


def test_helpers() -> None:
    assert node_ipv4(node_view(node(ips=("2001:db8::5", "198.51.100.7")))) == "198.51.100.7"
    assert node_ipv4(node_view(node(ips=("2001:db8::5",)))) is None
    assert node_ipv4(None) is None
    secret = {"data": {"pw": base64.b64encode(b"abc").decode(), "bad": "!!"}, "stringData": {"s": "x"}}
    assert secret_values(secret) == {"pw": "abc", "s": "x"}


def test_an_unresolvable_password_keeps_the_last_good_session(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    rig.secrets.put("bgp-auth", pw=PASSWORD)
    cfg = parse_config(CONFIG + SECRET_PEER)
    rig.run(cfg)
    good = {p.peer_address: p for p in rig.speaker.last("set_peers")}["192.0.2.3"]
    calls = len(rig.speaker.calls)

    # The Secret deleted (to be recreated), or a typo in its name: the session stays as it was.
    del rig.secrets.objects["bgp-auth"]
    with caplog.at_level(logging.WARNING, logger="lbspeaker.speaker.bgp"):
        rig.run(cfg, changes=Changes(secrets=True))
        typo = parse_config(CONFIG + SECRET_PEER.replace("bgp-auth", "bgp-auht"))
        rig.secrets.put("bgp-auth", pw=PASSWORD)
        rig.run(typo)
    assert len(rig.speaker.calls) == calls  # the BGP layer was never told of any change
    kept = [e for e in rig.recorder.events if e[2] == "BGPPeerKept"]
    assert [e[3] for e in kept] == [
        "node n1: peer 192.0.2.3: Secret bgp-auth not found (needed for key pw); keeping its session with the "
        "last good password",
        "node n1: peer 192.0.2.3: Secret bgp-auht not found (needed for key pw); keeping its session with the "
        "last good password",
    ]
    assert PASSWORD not in caplog.text

    # Fixed: the fresh definition, equal to the kept one; no BGP change either.
    rig.run(cfg)
    assert {p.peer_address: p for p in rig.speaker.last("set_peers")}["192.0.2.3"] == good
    assert len(rig.speaker.calls) == calls


def test_a_peer_that_never_had_its_password_is_left_out_until_it_has(rig: Rig) -> None:
    cfg = parse_config(CONFIG + SECRET_PEER)
    rig.run(cfg)
    assert [p.peer_address for p in rig.speaker.last("set_peers")] == ["192.0.2.1"]
    assert [e[2] for e in rig.recorder.events] == ["BGPPeerSkipped"]
    rig.secrets.put("bgp-auth", pw=PASSWORD)
    rig.run(cfg, changes=Changes(secrets=True))
    assert {p.peer_address for p in rig.speaker.last("set_peers")} == {"192.0.2.1", "192.0.2.3"}


def test_a_deselected_peer_is_forgotten(rig: Rig) -> None:
    # Its old password must not come back when it is selected again while its Secret is missing.
    rig.secrets.put("bgp-auth", pw=PASSWORD)
    selective = parse_config(CONFIG + SECRET_PEER + "  node-selectors: [{match-labels: {bgp: 'on'}}]\n")
    rig.run(selective, node(labels={"bgp": "on"}))
    assert "192.0.2.3" in {p.peer_address for p in rig.speaker.last("set_peers")}
    rig.run(selective, node())
    del rig.secrets.objects["bgp-auth"]
    rig.run(selective, node(labels={"bgp": "on"}))
    assert [p.peer_address for p in rig.speaker.last("set_peers")] == ["192.0.2.1"]
