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
    speaker._parsed = speaker.config  # type: ignore[assignment]
    speaker.alive = frozenset({"n1", "n2", "n3"})
    order: list[str] = []
    calls: list[Changes] = []

    def protocols(changes: Changes) -> None:
        calls.append(changes)
        order.append("protocols")

    def update_services(keys: set[str]) -> set[str]:
        order.append("services")
        return set(keys)

    speaker._alive_now = lambda: frozenset({"n1", "n2"})  # type: ignore[method-assign]
    speaker._protocols = protocols  # type: ignore[method-assign]
    speaker._update_services = update_services  # type: ignore[method-assign]
    speaker._update_members = lambda force: None  # type: ignore[method-assign]
    speaker._step(Work(services={f"apps/s{i}" for i in range(1000)}, liveness=True))
    assert order[:2] == ["protocols", "services"]
    assert calls[0] == Changes(liveness=frozenset({"n3"}))
    assert calls[1].services and not calls[1].liveness


