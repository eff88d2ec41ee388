"""The speaker's reconcile step: liveness is acted on first and alone, before any other recorded work."""

from __future__ import annotations

from lbspeaker.kube.rest import Rest
from lbspeaker.speaker.app import Speaker
from lbspeaker.speaker.protocol import Changes
from lbspeaker.speaker.reconcile import Work


class _NoApi:
    configuration = type("C", (), {"host": "http://192.0.2.1:1"})()


def test_a_death_is_acted_on_before_a_backlog_of_service_changes() -> None:
    speaker = Speaker(Rest(_NoApi()), "n1")  # type: ignore[arg-type]  # never started: no API call
    speaker.config = object()  # type: ignore[assignment]  # any configuration in force
    speaker._parsed = speaker.config
    speaker.alive = frozenset({"n1", "n2", "n3"})
    order: list[str] = []
    calls: list[Changes] = []

    def protocols(changes: Changes) -> None:
        calls.append(changes)
        order.append("protocols")

    def update_services(keys: set[str]) -> set[str]:
        order.append("services")
        return set(keys)

    # The steps around _step are replaced on purpose (method-assign); the replacements' types are still checked.
    speaker._alive_now = lambda: frozenset({"n1", "n2"})  # type: ignore[method-assign]
    speaker._protocols = protocols  # type: ignore[method-assign]
    speaker._update_services = update_services  # type: ignore[method-assign]
    speaker._update_members = lambda force: None  # type: ignore[method-assign]
    speaker._step(Work(services={f"apps/s{i}" for i in range(1000)}, liveness=True))
    assert order[:2] == ["protocols", "services"]
    assert calls[0] == Changes(liveness=frozenset({"n3"}))
    assert calls[1].services and not calls[1].liveness




def test_a_lease_renewal_alone_recomputes_nothing() -> None:
    from lbspeaker.config.parse import parse_config

    speaker = Speaker(Rest(_NoApi()), "n1")  # type: ignore[arg-type]  # never started: no API call
    cfg = parse_config("address-pools:\n- name: p\n  protocol: layer2\n  addresses: [192.0.2.200/29]\n")
    speaker.config = speaker._parsed = cfg
    calls: list[Changes] = []
    speaker._protocols = lambda changes: calls.append(changes)  # type: ignore[method-assign]  # recorded instead
    recomputed: list[bool] = []
    original = Speaker._update_members

    def spy(self: Speaker, force: bool) -> None:
        due = self._members_due
        original(self, force)
        recomputed.append(self._members_due != due)

    speaker._update_members = lambda force: spy(speaker, force)  # type: ignore[method-assign]  # spied on

    def lease(renew: str, rv: str, subnets: str = "192.0.2.0/24") -> dict[str, object]:
        return {"metadata": {"name": "speaker-n2", "namespace": "lbspeaker-system", "resourceVersion": rv,
                             "annotations": {"lbspeaker.io/subnets": subnets, "lbspeaker.io/boot": "3",
                                             "lbspeaker.io/heartbeat-addr": "192.0.2.12:7946"}},
                "spec": {"holderIdentity": "n2", "renewTime": renew, "leaseDurationSeconds": 40}}

    key = "lbspeaker-system/speaker-n2"
    speaker.leases._store[key] = lease("2026-01-01T00:00:00.000000Z", "1")
    speaker._step(Work(leases={"n2"}))
    assert calls and calls[-1].nodes == {"n2"}  # a new Lease: its link counts
    assert recomputed[-1]
    calls.clear()
    speaker.leases._store[key] = lease("2026-01-01T00:00:10.000000Z", "2")  # renewed, nothing else
    speaker._step(Work(leases={"n2"}))
    assert calls == [] and not recomputed[-1]
    speaker.leases._store[key] = lease("2026-01-01T00:00:20.000000Z", "3", subnets="198.51.100.0/24")
    speaker._step(Work(leases={"n2"}))
    assert calls and calls[-1].nodes == {"n2"} and recomputed[-1]
