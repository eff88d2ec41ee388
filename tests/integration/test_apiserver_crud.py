"""CRUD semantics of the API under test, driven only through the official Python client.

Every test here also passes against a real kube-apiserver (LBSPEAKER_TEST_KUBECONFIG).
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

# The v37 client's models make every field Optional; tests check values at runtime, so client
# handles are typed loosely here rather than guarded with `is not None` on every access.
Api = Any

Body = dict[str, Any]


def _name(prefix: str = "o") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _status_of(exc: ApiException) -> tuple[int, str]:
    body = json.loads(str(exc.body))
    assert body["kind"] == "Status" and body["status"] == "Failure"
    assert body["code"] == exc.status
    return int(exc.status), str(body["reason"])


def _message(exc: ApiException) -> str:
    return str(json.loads(str(exc.body))["message"])


@dataclass(frozen=True)
class Kind:
    id: str
    api: type
    suffix: str
    namespaced: bool
    body: Callable[[str, str], Body]


def _event_body(name: str, ns: str) -> Body:
    return {
        "metadata": {"name": name},
        "involvedObject": {"kind": "ConfigMap", "name": "x", "namespace": ns, "apiVersion": "v1"},
        "reason": "Testing",
        "message": "hello",
        "type": "Normal",
        "source": {"component": "test"},
    }


def _events_v1_body(name: str, ns: str) -> Body:
    # non-zero microseconds: the client re-serialises datetimes with isoformat(), which drops a zero
    # fraction, and MicroTime fields without exactly six fractional digits are rejected by kube-apiserver
    return {
        "metadata": {"name": name},
        "eventTime": "2024-01-01T00:00:00.000001Z",
        "reportingController": "lbspeaker.io/test",
        "reportingInstance": "test-1",
        "action": "Testing",
        "reason": "Testing",
        "type": "Normal",
        "note": "hello",
        "regarding": {"kind": "ConfigMap", "name": "x", "namespace": ns, "apiVersion": "v1"},
    }


KINDS = [
    Kind(
        "configmap",
        client.CoreV1Api,
        "config_map",
        True,
        lambda n, ns: {"metadata": {"name": n}, "data": {"k": "v"}},
    ),
    Kind(
        "secret",
        client.CoreV1Api,
        "secret",
        True,
        lambda n, ns: {"metadata": {"name": n}, "stringData": {"k": "v"}},
    ),
    Kind(
        "service",
        client.CoreV1Api,
        "service",
        True,
        lambda n, ns: {"metadata": {"name": n}, "spec": {"ports": [{"port": 80}]}},
    ),
    Kind(
        "endpoints",
        client.CoreV1Api,
        "endpoints",
        True,
        lambda n, ns: {
            "metadata": {"name": n},
            "subsets": [{"addresses": [{"ip": "192.0.2.1"}], "ports": [{"port": 80}]}],
        },
    ),
    Kind(
        "pod",
        client.CoreV1Api,
        "pod",
        True,
        lambda n, ns: {
            "metadata": {"name": n},
            "spec": {
                "containers": [{"name": "c", "image": "registry.invalid/img:1"}],
                "nodeName": "lbspeaker-no-such-node",
            },
        },
    ),
    Kind("event", client.CoreV1Api, "event", True, _event_body),
    Kind(
        "endpointslice",
        client.DiscoveryV1Api,
        "endpoint_slice",
        True,
        lambda n, ns: {
            "metadata": {"name": n},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["192.0.2.1"]}],
            "ports": [{"port": 80}],
        },
    ),
    Kind(
        "lease",
        client.CoordinationV1Api,
        "lease",
        True,
        lambda n, ns: {"metadata": {"name": n}, "spec": {"holderIdentity": "a", "leaseDurationSeconds": 10}},
    ),
    Kind("events.k8s.io", client.EventsV1Api, "event", True, _events_v1_body),
    Kind("node", client.CoreV1Api, "node", False, lambda n, ns: {"metadata": {"name": n}}),
    Kind("namespace", client.CoreV1Api, "namespace", False, lambda n, ns: {"metadata": {"name": n}}),
]


class Ops:
    """Typed client calls for one kind, namespaced or not, behind one interface."""

    def __init__(self, kind: Kind, api_client: Api, ns: str) -> None:
        self.api = kind.api(api_client)
        self.kind = kind
        self.ns = ns

    def _call(self, verb: str, *args: Any, **kwargs: Any) -> Any:
        if self.kind.namespaced:
            fn = getattr(self.api, f"{verb}_namespaced_{self.kind.suffix}")
            if verb in ("create", "list", "delete_collection"):
                return fn(self.ns, *args, **kwargs)
            return fn(args[0], self.ns, *args[1:], **kwargs)
        fn = getattr(self.api, f"{verb}_{self.kind.suffix}")
        return fn(*args, **kwargs)

    def create(self, body: Body) -> Any:
        return self._call("create", body)

    def read(self, name: str) -> Any:
        return self._call("read", name)

    def list(self, **kwargs: Any) -> Any:
        return self._call("list", **kwargs)

    def replace(self, name: str, body: Any) -> Any:
        return self._call("replace", name, body)

    def patch(self, name: str, body: Any, **kwargs: Any) -> Any:
        return self._call("patch", name, body, **kwargs)

    def delete(self, name: str) -> Any:
        return self._call("delete", name, grace_period_seconds=0)


@pytest.mark.parametrize("kind", KINDS, ids=[k.id for k in KINDS])
def test_create_get_list_update_patch_delete(kind: Kind, api_client: Api, namespace: str) -> None:
    ops = Ops(kind, api_client, namespace)
    name = _name()
    created = ops.create(kind.body(name, namespace))
    meta = created.metadata
    assert meta.name == name
    assert meta.uid and meta.resource_version and meta.creation_timestamp is not None
    if kind.namespaced:
        assert meta.namespace == namespace

    got = ops.read(name)
    assert got.metadata.uid == meta.uid
    listed = ops.list()
    assert name in [i.metadata.name for i in listed.items]
    assert listed.metadata.resource_version

    raw = api_client.sanitize_for_serialization(got)
    raw["metadata"].setdefault("labels", {})["updated"] = "yes"
    replaced = ops.replace(name, raw)
    assert replaced.metadata.labels["updated"] == "yes"
    assert replaced.metadata.resource_version != got.metadata.resource_version
    assert replaced.metadata.uid == meta.uid

    # an update carrying the old resourceVersion loses: 409 Conflict, object unchanged
    raw["metadata"]["labels"]["updated"] = "stale"
    with pytest.raises(ApiException) as err:
        ops.replace(name, raw)
    assert _status_of(err.value) == (409, "Conflict")
    assert "the object has been modified; please apply your changes to the latest version" in _message(
        err.value
    )
    assert ops.read(name).metadata.labels["updated"] == "yes"

    patched = ops.patch(name, {"metadata": {"labels": {"patched": "1"}}})
    assert patched.metadata.labels == {**replaced.metadata.labels, "patched": "1"}

    ops.delete(name)
    if kind.id != "namespace":  # a real cluster keeps a deleted namespace around while it terminates
        with pytest.raises(ApiException) as err:
            ops.read(name)
        assert _status_of(err.value) == (404, "NotFound")


def test_secret_string_data_is_folded_into_base64_data(core_v1: Api, namespace: str) -> None:
    core_v1.create_namespaced_secret(
        namespace,
        {
            "metadata": {"name": "s"},
            "stringData": {"k": "v"},
            "data": {"d": base64.b64encode(b"raw").decode()},
        },
    )
    got = core_v1.read_namespaced_secret("s", namespace)
    assert got.type == "Opaque"
    assert got.data == {"k": base64.b64encode(b"v").decode(), "d": base64.b64encode(b"raw").decode()}
    assert got.string_data is None


def test_core_and_events_k8s_io_events_are_one_object(api_client: Api, namespace: str) -> None:
    events_v1: Api = client.EventsV1Api(api_client)
    events_v1.create_namespaced_event(namespace, _events_v1_body("ev1", namespace))
    core = client.CoreV1Api(api_client).read_namespaced_event("ev1", namespace)
    assert core.involved_object.kind == "ConfigMap" and core.involved_object.name == "x"
    assert core.message == "hello"
    assert core.reporting_component == "lbspeaker.io/test"


def test_create_conflicts_and_missing_things(core_v1: Api, namespace: str) -> None:
    body = {"metadata": {"name": "dup"}, "data": {"a": "1"}}
    core_v1.create_namespaced_config_map(namespace, body)
    with pytest.raises(ApiException) as err:
        core_v1.create_namespaced_config_map(namespace, body)
    assert _status_of(err.value) == (409, "AlreadyExists")
    assert _message(err.value) == 'configmaps "dup" already exists'

    missing_ns = f"missing-{uuid.uuid4().hex[:8]}"
    with pytest.raises(ApiException) as err:
        core_v1.create_namespaced_config_map(missing_ns, body)
    assert _status_of(err.value) == (404, "NotFound")
    assert _message(err.value) == f'namespaces "{missing_ns}" not found'

    calls: list[Callable[[], Any]] = [
        lambda: core_v1.read_namespaced_config_map("nope", namespace),
        lambda: core_v1.delete_namespaced_config_map("nope", namespace),
        lambda: core_v1.replace_namespaced_config_map("nope", namespace, {"metadata": {"name": "nope"}}),
        lambda: core_v1.patch_namespaced_config_map("nope", namespace, {"data": {"a": "b"}}),
    ]
    for call in calls:
        with pytest.raises(ApiException) as err:
            call()
        assert _status_of(err.value) == (404, "NotFound")


@pytest.mark.parametrize(
    "body, field",
    [
        ({"metadata": {"name": "Bad_Name"}, "data": {}}, "metadata.name"),
        ({"metadata": {}, "data": {}}, "metadata.name"),
        ({"metadata": {"name": "ok", "labels": {"bad key!": "x"}}}, "metadata.labels"),
        ({"metadata": {"name": "ok"}, "data": {"bad/key": "x"}}, "data"),
    ],
)
def test_invalid_objects_are_422_naming_the_field(
    core_v1: Api, namespace: str, body: Body, field: str
) -> None:
    with pytest.raises(ApiException) as err:
        core_v1.create_namespaced_config_map(namespace, body)
    assert _status_of(err.value) == (422, "Invalid")
    causes = json.loads(str(err.value.body))["details"]["causes"]
    assert any(c["field"].startswith(field) for c in causes), causes


def test_generate_name(core_v1: Api, namespace: str) -> None:
    got = core_v1.create_namespaced_config_map(namespace, {"metadata": {"generateName": "gen-"}})
    assert got.metadata.name.startswith("gen-") and len(got.metadata.name) == len("gen-") + 5
    assert got.metadata.generate_name == "gen-"


def test_service_status_is_a_separate_subresource(core_v1: Api, namespace: str) -> None:
    core_v1.create_namespaced_service(
        namespace,
        {
            "metadata": {"name": "lb"},
            "spec": {
                "type": "LoadBalancer",
                "loadBalancerClass": "lbspeaker.io/test-none",
                "ports": [{"port": 80}],
            },
            "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.99"}]}},
        },
    )
    svc = core_v1.read_namespaced_service("lb", namespace)
    assert not svc.status.load_balancer.ingress  # status in a create body is dropped

    core_v1.patch_namespaced_service_status(
        "lb", namespace, {"status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}]}}}
    )
    # main resource: status changes are ignored, spec/metadata changes apply
    core_v1.patch_namespaced_service(
        "lb",
        namespace,
        {"metadata": {"labels": {"a": "b"}}, "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.66"}]}}},
    )
    raw = core_v1.api_client.sanitize_for_serialization(core_v1.read_namespaced_service("lb", namespace))
    raw["status"] = {"loadBalancer": {}}
    raw["spec"]["sessionAffinity"] = "ClientIP"
    core_v1.replace_namespaced_service("lb", namespace, raw)
    svc = core_v1.read_namespaced_service("lb", namespace)
    assert [i.ip for i in svc.status.load_balancer.ingress] == ["192.0.2.10"]
    assert svc.spec.session_affinity == "ClientIP" and svc.metadata.labels == {"a": "b"}

    # status subresource: spec changes are ignored
    raw = core_v1.api_client.sanitize_for_serialization(svc)
    raw["spec"]["sessionAffinity"] = "None"
    raw["status"] = {"loadBalancer": {"ingress": [{"ip": "192.0.2.11"}]}}
    core_v1.replace_namespaced_service_status("lb", namespace, raw)
    svc = core_v1.read_namespaced_service("lb", namespace)
    assert [i.ip for i in svc.status.load_balancer.ingress] == ["192.0.2.11"]
    assert svc.spec.session_affinity == "ClientIP"


def test_pod_and_node_status_subresources(core_v1: Api, namespace: str) -> None:
    pod = core_v1.create_namespaced_pod(namespace, KINDS[4].body("p", namespace))
    assert pod.status.phase == "Pending"
    core_v1.patch_namespaced_pod_status(
        "p", namespace, {"status": {"phase": "Running", "podIP": "192.0.2.5"}}
    )
    core_v1.patch_namespaced_pod(
        "p", namespace, {"metadata": {"labels": {"x": "y"}}, "status": {"phase": "Failed"}}
    )
    pod = core_v1.read_namespaced_pod("p", namespace)
    assert pod.status.phase == "Running" and pod.status.pod_ip == "192.0.2.5"
    assert pod.metadata.labels == {"x": "y"}
    core_v1.delete_namespaced_pod("p", namespace, grace_period_seconds=0)

    node = _name("t-node")
    core_v1.create_node({"metadata": {"name": node}})
    try:
        cond = {
            "type": "Ready",
            "status": "True",
            "reason": "Test",
            "message": "ok",
            "lastHeartbeatTime": "2024-01-01T00:00:00Z",
            "lastTransitionTime": "2024-01-01T00:00:00Z",
        }
        core_v1.patch_node_status(node, {"status": {"conditions": [cond]}})
        core_v1.patch_node(node, {"spec": {"unschedulable": True}, "status": {"conditions": []}})
        got = core_v1.read_node(node)
        assert [(c.type, c.status) for c in got.status.conditions] == [("Ready", "True")]
        assert got.spec.unschedulable is True
    finally:
        core_v1.delete_node(node)


def test_patch_with_stale_resource_version_is_a_conflict(core_v1: Api, namespace: str) -> None:
    first = core_v1.create_namespaced_config_map(namespace, {"metadata": {"name": "c"}, "data": {"a": "1"}})
    core_v1.patch_namespaced_config_map("c", namespace, {"data": {"a": "2"}})
    with pytest.raises(ApiException) as err:
        core_v1.patch_namespaced_config_map(
            "c",
            namespace,
            {"metadata": {"resourceVersion": first.metadata.resource_version}, "data": {"a": "3"}},
        )
    assert _status_of(err.value) == (409, "Conflict")
    current = core_v1.read_namespaced_config_map("c", namespace)
    assert current.data == {"a": "2"}
    core_v1.patch_namespaced_config_map(
        "c",
        namespace,
        {"metadata": {"resourceVersion": current.metadata.resource_version}, "data": {"a": "4"}},
    )
    assert core_v1.read_namespaced_config_map("c", namespace).data == {"a": "4"}


def test_noop_update_keeps_resource_version(core_v1: Api, namespace: str) -> None:
    created = core_v1.create_namespaced_config_map(namespace, {"metadata": {"name": "c"}, "data": {"a": "1"}})
    again = core_v1.patch_namespaced_config_map("c", namespace, {"data": {"a": "1"}})
    assert again.metadata.resource_version == created.metadata.resource_version


def test_patch_flavours(core_v1: Api, namespace: str) -> None:
    core_v1.create_namespaced_service(
        namespace,
        {
            "metadata": {"name": "s"},
            "spec": {"ports": [{"name": "http", "port": 80}, {"name": "https", "port": 443}]},
        },
    )

    # strategic merge (what the client sends for a dict): ports merge by their "port" key
    core_v1.patch_namespaced_service(
        "s", namespace, {"spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}
    )
    ports = core_v1.read_namespaced_service("s", namespace).spec.ports
    assert [(p.port, p.target_port) for p in ports] == [(80, 8080), (443, 443)]
    core_v1.patch_namespaced_service("s", namespace, {"spec": {"ports": [{"$patch": "delete", "port": 443}]}})
    assert [p.port for p in core_v1.read_namespaced_service("s", namespace).spec.ports] == [80]

    # JSON merge patch: lists are replaced
    core_v1.patch_namespaced_service(
        "s",
        namespace,
        {"spec": {"ports": [{"name": "dns", "port": 53, "protocol": "UDP"}]}},
        _content_type="application/merge-patch+json",
    )
    ports = core_v1.read_namespaced_service("s", namespace).spec.ports
    assert [(p.port, p.protocol) for p in ports] == [(53, "UDP")]

    # JSON patch (a list of operations)
    core_v1.patch_namespaced_service(
        "s",
        namespace,
        [
            {"op": "add", "path": "/metadata/labels", "value": {"x": "1"}},
            {"op": "replace", "path": "/spec/ports/0/port", "value": 5353},
        ],
    )
    svc = core_v1.read_namespaced_service("s", namespace)
    assert svc.metadata.labels == {"x": "1"} and svc.spec.ports[0].port == 5353
    with pytest.raises(ApiException) as err:
        core_v1.patch_namespaced_service(
            "s", namespace, [{"op": "test", "path": "/metadata/labels/x", "value": "2"}]
        )
    assert err.value.status == 422


def test_deletecollection_with_label_selector(core_v1: Api, namespace: str) -> None:
    for i in range(4):
        core_v1.create_namespaced_config_map(
            namespace, {"metadata": {"name": f"c{i}", "labels": {"drop": str(i % 2 == 0)}}}
        )
    core_v1.delete_collection_namespaced_config_map(namespace, label_selector="drop=True")
    left = sorted(c.metadata.name for c in core_v1.list_namespaced_config_map(namespace).items)
    assert [n for n in left if n.startswith("c")] == ["c1", "c3"]


def test_finalizers_hold_deletion_until_removed(core_v1: Api, namespace: str) -> None:
    core_v1.create_namespaced_config_map(
        namespace, {"metadata": {"name": "f", "finalizers": ["lbspeaker.io/test"]}}
    )
    core_v1.delete_namespaced_config_map("f", namespace)
    held = core_v1.read_namespaced_config_map("f", namespace)
    assert held.metadata.deletion_timestamp is not None
    core_v1.patch_namespaced_config_map(
        "f", namespace, {"metadata": {"finalizers": None}}, _content_type="application/merge-patch+json"
    )
    with pytest.raises(ApiException) as err:
        core_v1.read_namespaced_config_map("f", namespace)
    assert err.value.status == 404


def test_deleted_namespace_takes_its_objects(api_server: Any, core_v1: Api) -> None:
    ns = _name("t-gone")
    core_v1.create_namespace({"metadata": {"name": ns}})
    core_v1.create_namespaced_config_map(ns, {"metadata": {"name": "c"}})
    deleted = core_v1.delete_namespace(ns)
    assert deleted["status"]["phase"] == "Terminating"
    with pytest.raises(ApiException) as err:
        core_v1.read_namespaced_config_map("c", ns)
    assert err.value.status == 404
    with pytest.raises(ApiException) as err:
        core_v1.read_namespace(ns)
    assert err.value.status == 404


def test_time_fields_are_validated_and_normalized(api_client: Api, namespace: str) -> None:
    leases: Api = client.CoordinationV1Api(api_client)
    with pytest.raises(ApiException) as err:  # no zone: the real decoder refuses it
        leases.create_namespaced_lease(
            namespace, {"metadata": {"name": "naive"}, "spec": {"renewTime": "2024-01-01T00:00:00.123456"}}
        )
    assert err.value.status == 400
    # MicroTime needs exactly six fractional digits; beware: the client turns a datetime with
    # microsecond == 0 into exactly this fraction-less form
    with pytest.raises(ApiException) as err:
        leases.create_namespaced_lease(
            namespace, {"metadata": {"name": "short"}, "spec": {"renewTime": "2024-01-01T00:00:00Z"}}
        )
    assert err.value.status == 400

    leases.create_namespaced_lease(
        namespace,
        {
            "metadata": {"name": "ok"},
            "spec": {
                "holderIdentity": "me",
                "acquireTime": "2024-01-01T02:00:00.000001+02:00",
                "renewTime": "2024-01-01T00:00:05.500000Z",
            },
        },
    )
    raw = leases.read_namespaced_lease("ok", namespace, _preload_content=False)
    spec = json.loads(raw.data)["spec"]
    assert (spec["acquireTime"], spec["renewTime"]) == (
        "2024-01-01T00:00:00.000001Z",
        "2024-01-01T00:00:05.500000Z",
    )


def test_decoding_drops_unknown_fields_and_refuses_wrong_types(core_v1: Api, namespace: str) -> None:
    core_v1.create_namespaced_service(
        namespace, {"metadata": {"name": "typo"}, "spec": {"ports": [{"port": 80}]}}
    )
    # patch bodies are plain dicts, so they reach the server unvalidated by the client's models
    typo = {"spec": {"loadBalancerIp": "192.0.2.1"}}
    resp = core_v1.patch_namespaced_service("typo", namespace, typo, _preload_content=False)
    assert 'unknown field \\"spec.loadBalancerIp\\"' in resp.headers.get("Warning", "")
    assert "loadBalancerIp" not in json.loads(resp.data)["spec"]

    # a patch is decoded after it is applied, and the server reports that as 422 on the field "patch"
    # (kube-apiserver v1.36: issue 10), while a create or update body that fails to decode is a 400
    with pytest.raises(ApiException) as err:
        core_v1.patch_namespaced_service("typo", namespace, typo, field_validation="Strict")
    assert _status_of(err.value) == (422, "Invalid")
    assert 'strict decoding error: unknown field "spec.loadBalancerIp"' in _message(err.value)
    body = json.loads(str(err.value.body))
    assert [c["field"] for c in body["details"]["causes"]] == ["patch"]

    status, body = _raw_create(core_v1, namespace, "services", {
        "metadata": {"name": "typo2"}, "spec": {"ports": [{"port": 80}], "loadBalancerIp": "x"}}, "Strict")
    assert (status, body["reason"]) == (400, "BadRequest")
    assert 'strict decoding error: unknown field "spec.loadBalancerIp"' in body["message"]

    with pytest.raises(ApiException) as err:
        core_v1.patch_namespaced_service("typo", namespace, {"spec": {"externalIPs": "192.0.2.1"}})
    assert _status_of(err.value) == (422, "Invalid")
    assert "cannot restore slice from string" in _message(err.value)  # the strategic-merge path's words

    status, body = _raw_create(core_v1, namespace, "services", {
        "metadata": {"name": "typo3"}, "spec": {"ports": [{"port": 80}], "externalIPs": "x"}})
    assert (status, body["reason"]) == (400, "BadRequest")
    assert "cannot unmarshal string into Go struct field ServiceSpec.spec.externalIPs" in body["message"]


def _raw_create(core_v1: Api, namespace: str, resource: str, obj: Body, validation: str | None = None
                ) -> tuple[int, Body]:
    """POST a body the client's models would refuse, through the client's own transport."""
    api = core_v1.api_client
    query = [("fieldValidation", validation)] if validation else []
    _, url, headers, _, _ = api.param_serialize(
        method="POST", resource_path=f"/api/v1/namespaces/{namespace}/{resource}", query_params=query,
        header_params={"Content-Type": "application/json", "Accept": "application/json"},
        auth_settings=["BearerToken"])
    resp = api.call_api("POST", url, header_params=headers, body=obj)
    return resp.status, json.loads(resp.read())
