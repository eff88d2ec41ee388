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
    """PATCHes answer from ``patch_answers`` in order (an exception is raised)."""

    def __init__(self, patch_answers: list[Exception | None]) -> None:
        self.patch_answers = patch_answers
        self.calls: list[tuple[str, str, Any]] = []

    def request(self, method: str, path: str, *, body: Any = None, **_: Any) -> dict[str, Any]:
        self.calls.append((method, path, body))
        answer = self.patch_answers.pop(0)
        if answer is not None:
            raise answer
        return {}


def writes(result: str) -> float:
    return float(metrics.STATUS_WRITES.labels(result)._value.get())


def make(rest: FakeRest, cached: dict[str, Any] | None = None) -> Controller:
    """A controller whose Service cache holds ``cached`` (the version the informer has delivered)."""
    ctl = Controller(rest, stale_wait=0.05)  # type: ignore[arg-type]  # FakeRest: only request(), scripted
    if cached is not None:
        ctl.services._store["ns/s"] = cached
    return ctl


def test_status_entries_carry_ip_mode_vip() -> None:
    rest = FakeRest([None])
    make(rest)._write_status(service("1"), ("192.0.2.1", "2001:db8::1"))
    method, path, body = rest.calls[0]
    assert (method, path) == ("PATCH", "/api/v1/namespaces/ns/services/s/status")
    assert body == {"metadata": {"resourceVersion": "1"}, "status": {"loadBalancer": {"ingress": [
        {"ip": "192.0.2.1", "ipMode": "VIP"}, {"ip": "2001:db8::1", "ipMode": "VIP"}]}}}


def test_clearing_writes_a_null_ingress() -> None:
    rest = FakeRest([None])
    make(rest)._write_status(service("1"), ())
    assert rest.calls[0][2]["status"] == {"loadBalancer": {"ingress": None}}


@pytest.mark.parametrize("refusal", [ApiError(409, "Conflict", "the object has been modified"), STALE_422])
def test_a_stale_write_is_retried_once_from_a_fresh_read(refusal: ApiError) -> None:
    rest = FakeRest([refusal, None])
    conflicts, errors = writes("conflict"), writes("error")
    ctl = make(rest, cached=service("7"))
    ctl._write_status(service("3"), ("192.0.2.1",))
    assert [c[0] for c in rest.calls] == ["PATCH", "PATCH"]
    assert rest.calls[1][2]["metadata"] == {"resourceVersion": "7"}, "the retry uses the fresh version"
    assert writes("conflict") == conflicts + 1 and writes("error") == errors, "a conflict, not a failure"
    assert ctl._written["ns/s"] == ("192.0.2.1",)


def test_a_422_at_the_current_version_is_a_real_failure() -> None:
    rest = FakeRest([STALE_422])
    errors = writes("error")
    with pytest.raises(ApiError):
        make(rest, cached=service("3"))._write_status(service("3"), ("192.0.2.1",))
    assert [c[0] for c in rest.calls] == ["PATCH"]
    assert writes("error") == errors + 1


def test_a_conflict_before_the_cache_has_the_newer_version_waits_for_it() -> None:
    """Not resent blind: the key is retried (rate-limited) once the cache can tell the fresh version."""
    rest = FakeRest([ApiError(409, "Conflict", "modified")])
    conflicts, errors = writes("conflict"), writes("error")
    with pytest.raises(ApiError) as err:
        make(rest, cached=service("3"))._write_status(service("3"), ("192.0.2.1",))
    assert err.value.conflict and len(rest.calls) == 1
    assert writes("conflict") == conflicts + 1 and writes("error") == errors


def test_a_stale_write_of_a_changed_service_is_left_to_the_new_version() -> None:
    rest = FakeRest([ApiError(409, "Conflict", "modified")])
    with pytest.raises(ApiError) as err:
        make(rest, cached=service("7", {"lbspeaker.io/address-pool": "x"}))._write_status(service("3"), ("192.0.2.1",))
    assert err.value.conflict and len(rest.calls) == 1


def test_event_texts_count_ips() -> None:
    assert ips_text(("192.0.2.240",)) == "IP 192.0.2.240"
    assert ips_text(("192.0.2.30", "2001:db8:5::")) == "IPs 192.0.2.30, 2001:db8:5::"
