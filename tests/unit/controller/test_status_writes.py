"""How the controller writes a Service's status, and what it does when the write is refused as stale."""

from __future__ import annotations

from typing import Any

import pytest

from controller import metrics
from controller.reconcile import Controller, ips_text
from lbspeaker.kube.rest import ApiError

STALE_422 = ApiError(422, "Invalid", 'Service "s" is invalid: status.loadBalancer.ingress[0].ipMode: Required '
                                     "value: must be specified when `ip` is set")


def service(rv: str, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "s", "namespace": "ns", "resourceVersion": rv, "annotations": annotations or {}},
            "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}}


class FakeRest:
    """PATCHes answer from ``patch_answers`` in order (an exception is raised); GET returns ``fresh``."""

    def __init__(self, patch_answers: list[Exception | None], fresh: dict[str, Any]) -> None:
        self.patch_answers = patch_answers
        self.fresh = fresh
        self.calls: list[tuple[str, str, Any]] = []

    def request(self, method: str, path: str, *, body: Any = None, **_: Any) -> dict[str, Any]:
        self.calls.append((method, path, body))
        answer = self.patch_answers.pop(0)
        if answer is not None:
            raise answer
        return {}

    def get(self, path: str, **_: Any) -> dict[str, Any]:
        self.calls.append(("GET", path, None))
        return self.fresh


def writes(result: str) -> float:
    return metrics.STATUS_WRITES.labels(result)._value.get()  # type: ignore[attr-defined, no-any-return]


def make(rest: FakeRest) -> Controller:
    return Controller(rest)  # type: ignore[arg-type]


def test_status_entries_carry_ip_mode_vip() -> None:
    rest = FakeRest([None], service("1"))
    make(rest)._write_status(service("1"), ("192.0.2.1", "2001:db8::1"))
    method, path, body = rest.calls[0]
    assert (method, path) == ("PATCH", "/api/v1/namespaces/ns/services/s/status")
    assert body == {"metadata": {"resourceVersion": "1"}, "status": {"loadBalancer": {"ingress": [
        {"ip": "192.0.2.1", "ipMode": "VIP"}, {"ip": "2001:db8::1", "ipMode": "VIP"}]}}}


def test_clearing_writes_a_null_ingress() -> None:
    rest = FakeRest([None], service("1"))
    make(rest)._write_status(service("1"), ())
    assert rest.calls[0][2]["status"] == {"loadBalancer": {"ingress": None}}


@pytest.mark.parametrize("refusal", [ApiError(409, "Conflict", "the object has been modified"), STALE_422])
def test_a_stale_write_is_retried_once_from_a_fresh_read(refusal: ApiError) -> None:
    rest = FakeRest([refusal, None], service("7"))
    conflicts, errors = writes("conflict"), writes("error")
    ctl = make(rest)
    ctl._write_status(service("3"), ("192.0.2.1",))
    assert [c[0] for c in rest.calls] == ["PATCH", "GET", "PATCH"]
    assert rest.calls[2][2]["metadata"] == {"resourceVersion": "7"}, "the retry uses the fresh version"
    assert writes("conflict") == conflicts + 1 and writes("error") == errors, "a conflict, not a failure"
    assert ctl._written["ns/s"] == ("192.0.2.1",)


def test_a_422_at_the_current_version_is_a_real_failure() -> None:
    rest = FakeRest([STALE_422], service("3"))
    errors = writes("error")
    with pytest.raises(ApiError):
        make(rest)._write_status(service("3"), ("192.0.2.1",))
    assert [c[0] for c in rest.calls] == ["PATCH", "GET"]
    assert writes("error") == errors + 1


def test_a_stale_write_of_a_changed_service_is_left_to_the_new_version() -> None:
    rest = FakeRest([ApiError(409, "Conflict", "modified")], service("7", {"lbspeaker.io/address-pool": "x"}))
    with pytest.raises(ApiError) as err:
        make(rest)._write_status(service("3"), ("192.0.2.1",))
    assert err.value.conflict and [c[0] for c in rest.calls] == ["PATCH", "GET"]


def test_event_texts_count_ips() -> None:
    assert ips_text(("192.0.2.240",)) == "IP 192.0.2.240"
    assert ips_text(("192.0.2.30", "2001:db8:5::")) == "IPs 192.0.2.30, 2001:db8:5::"
