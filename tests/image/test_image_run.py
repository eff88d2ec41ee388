"""Both programs from the built image, run as deploy/ says, against the API test server on the real kernel.

The controller container runs as deploy/controller.yaml's Deployment (uid 65532, read-only root, no
capabilities, its own network namespace, in-cluster service account) and assigns the IPs; the speaker
container runs as deploy/speaker.yaml's DaemonSet (hostNetwork in the node's namespace, uid 0 with
only NET_RAW and NET_ADMIN, read-only root, the two memory emptyDirs) and announces them: a client
on the node's LAN gets the node's MAC by ARP, and a BIRD router learns the BGP pool's IP over a
TCP-MD5 session. Both containers' probes answer on the ports the manifests name, and the speaker
stops within its grace period on SIGTERM. Lab: see tests/image/lab.py (prefix "img", deleted
afterwards, also on failure).
"""

from __future__ import annotations

import base64
import secrets
import shutil
from collections.abc import Callable, Iterator

import pytest
from lbspeaker_testkit.bird import BirdNeighbor, BirdRouter, bird_available, render_bird_config, wait_until
from lbspeaker_testkit.kubeutil import lb_service, pool_configmap, wait_for

from lbspeaker.kube.rest import MERGE_PATCH, path_for
from tests.image import kubelet
from tests.image.conftest import BuiltImage
from tests.image.lab import NODE, NODE_IP, ROUTER_IP, Container, ImageLab, podman

NS = "lbspeaker-system"
APPS = "img-apps"
ROUTER_ASN = 64501
NODE_ASN = 64500
PASSWORD = "img-md5-pw"  # a test value
CONFIG = f"""\
address-pools:
- name: lan
  protocol: layer2
  addresses: [192.0.2.200-192.0.2.210]
- name: routed
  protocol: bgp
  auto-assign: false
  addresses: [203.0.113.16/28]
peers:
- peer-address: {ROUTER_IP}
  peer-asn: {ROUTER_ASN}
  my-asn: {NODE_ASN}
  password-secret: {{name: bgp-auth, key: password}}
"""

pytestmark = [
    pytest.mark.skipif(bird_available() is not None, reason=bird_available() or ""),
    pytest.mark.skipif(shutil.which("arping") is None, reason="needs arping (iputils-arping)"),
    pytest.mark.timeout(1500),  # the first test pays for the image build (see conftest.py)
]


class Running:
    def __init__(self, lab: ImageLab, controller: Container, speaker: Container, router: BirdRouter) -> None:
        self.lab = lab
        self.controller = controller
        self.speaker = speaker
        self.router = router


def _setup_cluster(lab: ImageLab) -> None:
    c = lab.cluster
    for ns in (NS, APPS):
        c.rest.request("POST", path_for("v1", "namespaces"),
                       body={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    c.create(NS, "secrets", {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "lbspeaker-memberlist"},
                             "data": {"secretkey": base64.b64encode(secrets.token_bytes(32)).decode()}})
    c.create(NS, "secrets", {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "bgp-auth"},
                             "data": {"password": base64.b64encode(PASSWORD.encode()).decode()}})
    c.create(NS, "configmaps", pool_configmap(CONFIG))
    c.rest.request("POST", path_for("v1", "nodes"), body={
        "apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE, "labels": {"kubernetes.io/hostname": NODE}}})
    c.rest.request("PATCH", path_for("v1", "nodes", None, NODE, "status"), content_type=MERGE_PATCH, body={
        "status": {"addresses": [{"type": "InternalIP", "address": NODE_IP}, {"type": "Hostname", "address": NODE}]}})
    for name, notes in (("web", {}), ("routed", {"metallb.universe.tf/address-pool": "routed"})):
        c.create(APPS, "services", lb_service(name, annotations=notes))
        c.rest.request("POST", path_for("discovery.k8s.io/v1", "endpointslices", APPS), body={
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": f"{name}-1", "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["198.51.100.10"], "nodeName": NODE, "conditions": {"ready": True}}],
            "ports": [{"name": "p0", "protocol": "TCP", "port": 8080}]})


def ready_or_gone(container: Container) -> Callable[[], bool]:
    """A probe: is the container ready, or has it stopped (then waiting longer is no use)?"""
    return lambda: container.probe("readiness")[0] == 200 or not container.running()


@pytest.fixture(scope="module")
def running(image: BuiltImage) -> Iterator[Running]:
    with ImageLab(image.id) as lab:
        _setup_cluster(lab)
        assert lab.lab is not None
        router = BirdRouter(lab.lab, lab.router, lab.dir / "bird", render_bird_config(ROUTER_IP, ROUTER_ASN, [
            BirdNeighbor(name=NODE, address=NODE_IP, asn=NODE_ASN, local_address=ROUTER_IP, password=PASSWORD)]))
        try:
            controller = lab.start(kubelet.deployed("Deployment", "controller"), "controller-7d9c5-x2x4q", lab.pod,
                                   host_network=False)
            speaker = lab.start(kubelet.deployed("DaemonSet", "speaker"), "speaker-k7m2p", lab.node,
                                host_network=True)
            for container in (controller, speaker):
                try:
                    wait_for(ready_or_gone(container), timeout=90, what=f"{container.name} ready")
                    assert container.running()
                except AssertionError as exc:
                    raise AssertionError(f"{exc}\n{container.name} logs:\n{container.logs()}") from None
            yield Running(lab, controller, speaker, router)
        finally:
            router.stop()


def _assert_runs_as(container: Container, uid: int, gid: int, caps: int) -> None:
    status = container.proc_status()
    assert status["Uid"].split() == [str(uid)] * 4 and status["Gid"].split() == [str(gid)] * 4
    for field in ("CapEff", "CapPrm", "CapBnd"):
        assert int(status[field], 16) == caps, f"{field} {status[field]}, expected {caps:x}"
    assert int(status["CapAmb"], 16) == 0 and int(status["CapInh"], 16) == 0
    assert status["NoNewPrivs"] == "1", "allowPrivilegeEscalation: false sets no_new_privs"
    assert status["Seccomp"] == "2", "the runtime's default seccomp filter is on"
    assert "ro" in container.mounts()["/"], "readOnlyRootFilesystem: the root is mounted read-only"
    volumes = {m["mountPath"] for m in kubelet.only_container(kubelet.pod_spec(container.workload))
               .get("volumeMounts") or []}
    assert container.writable_paths() == volumes, "writable: the emptyDir volumes and nothing else"


def test_controller_runs_as_the_deployment_says(running: Running) -> None:
    _assert_runs_as(running.controller, 65532, 65532, 0)


def test_speaker_runs_as_the_daemonset_says(running: Running) -> None:
    _assert_runs_as(running.speaker, 0, 0, kubelet.capability_mask(["NET_RAW", "NET_ADMIN"]))


@pytest.mark.parametrize("who", ["controller", "speaker"])
def test_probes_answer_on_the_manifests_ports(running: Running, who: str) -> None:
    container: Container = getattr(running, who)
    ports = {p.port for p in kubelet.probes(container.workload)}
    assert ports == {7472}
    for kind in ("liveness", "readiness"):
        code, body = container.probe(kind)
        assert code == 200, f"{who} {kind}: {code} {body!r}\n{container.logs()}"


def test_controller_assigns_ips_from_the_pools(running: Running) -> None:
    c = running.lab.cluster
    assert c.wait_ips(APPS, "web", timeout=30)[0].startswith("192.0.2.2")
    assert c.wait_ips(APPS, "routed", timeout=30)[0].startswith("203.0.113.")


def test_speaker_answers_arp_for_the_assigned_ip(running: Running) -> None:
    (ip,) = running.lab.cluster.wait_ips(APPS, "web", timeout=30)
    macs = wait_for(lambda: running.lab.arping(ip), timeout=30, what=f"an ARP answer for {ip}")
    assert set(macs) == {running.lab.node.mac}, f"{macs}\n{running.speaker.logs()}"


def test_speaker_bgp_session_comes_up_and_announces_the_ip(running: Running) -> None:
    (ip,) = running.lab.cluster.wait_ips(APPS, "routed", timeout=30)
    router = running.router
    try:
        wait_until(lambda: (s := router.protocols().get(NODE)) is not None and s.established, timeout=60,
                   what="the speaker's BGP session on the router")
        paths = wait_until(lambda: router.routes(f"{ip}/32").get(f"{ip}/32"), timeout=30,
                           what=f"the router's route to {ip}")
    except TimeoutError as exc:
        raise AssertionError(f"{exc}\n{router.protocol_detail(NODE)}\n{running.speaker.logs()}") from None
    assert [p.next_hop for p in paths] == [NODE_IP]


def test_speaker_stops_within_its_grace_period(running: Running) -> None:
    """Last: SIGTERM (what the kubelet sends) ends the speaker cleanly before the grace runs out, and it
    releases its own Lease on the way (kept, with its boot number, for the next start)."""
    lease = path_for("coordination.k8s.io/v1", "leases", NS, f"speaker-{NODE}")
    assert running.lab.cluster.rest.get(lease)["metadata"]["name"] == f"speaker-{NODE}"
    grace = int(kubelet.pod_spec(running.speaker.workload)["terminationGracePeriodSeconds"])
    podman("stop", "--time", str(grace), running.speaker.name, timeout=30)
    assert running.speaker.inspect("{{.State.ExitCode}}") == "0", running.speaker.logs()
    released = running.lab.cluster.rest.get(lease)
    assert not released["spec"].get("holderIdentity")
    assert released["metadata"]["annotations"]["lbspeaker.io/state"] == "left"
