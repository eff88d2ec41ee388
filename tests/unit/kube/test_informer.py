"""Informer rules against a scripted API (the HTTP behaviour itself is in tests/integration/test_api_faults.py)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from lbspeaker.kube.informer import MAX_WATCH_FAILURES, Informer
from lbspeaker.kube.rest import ApiError


def obj(name: str, rv: str, **data: str) -> dict[str, Any]:
    return {"kind": "ConfigMap", "apiVersion": "v1",
            "metadata": {"name": name, "namespace": "ns", "resourceVersion": rv}, "data": data}


class ScriptedRest:
    """Answers lists from ``lists`` (one per call, the last repeated) and watches from ``watches``
    (a list of event lists or exceptions, one per call; then the informer is stopped)."""

    def __init__(self, lists: list[tuple[str, list[dict[str, Any]]]], watches: list[Any],
                 stop: Callable[[], None]) -> None:
        self.lists = lists
        self.watches = watches
        self.stop = stop
        self.list_calls = 0
        self.watch_from: list[str | None] = []

    def get(self, path: str, **query: Any) -> dict[str, Any]:
        rv, items = self.lists[min(self.list_calls, len(self.lists) - 1)]
        self.list_calls += 1
        return {"kind": "ConfigMapList", "apiVersion": "v1", "metadata": {"resourceVersion": rv},
                "items": [dict(i) for i in items]}

    def watch(self, path: str, query: Mapping[str, Any], read_timeout: float,
              on_open: Callable[[], None] | None = None) -> Iterator[dict[str, Any]]:
        self.watch_from.append(query.get("resourceVersion"))
        if not self.watches:
            self.stop()
            return
        step = self.watches.pop(0)
        if isinstance(step, Exception):
            raise step
        if on_open:
            on_open()
        yield from step


def run(lists: list[tuple[str, list[dict[str, Any]]]], watches: list[Any]
        ) -> tuple[Informer, ScriptedRest, list[tuple[Any, Any]]]:
    seen: list[tuple[Any, Any]] = []
    holder: list[Informer] = []
    rest = ScriptedRest(lists, watches, lambda: holder[0].stop())
    inf = Informer(rest, "/api/v1/namespaces/ns/configmaps", name="t",  # type: ignore[arg-type]  # scripted Rest
                   handler=lambda o, n: seen.append((o, n)), backoff=(0.001, 0.002))
    holder.append(inf)
    t = threading.Thread(target=inf._run)
    t.start()
    t.join(10)
    assert not t.is_alive()
    return inf, rest, seen


def test_a_relist_reports_a_changed_object_even_at_the_same_resource_version() -> None:
    """After a restore a version number can come back for another write: compare content, not only rv."""
    before, after = obj("a", "7", v="old"), obj("a", "7", v="new")
    inf, _, seen = run([("7", [before]), ("7", [after])], [ApiError(410, "Expired", "too old")])
    assert inf.relists == 2
    assert (before, after) in seen
    assert inf.get("ns/a") == after


def test_a_watch_event_older_than_the_cache_makes_it_relist() -> None:
    inf, rest, seen = run(
        [("10", [obj("a", "9")]), ("5", [obj("b", "4")])],
        [[{"type": "ADDED", "object": obj("c", "11")}, {"type": "MODIFIED", "object": obj("a", "6")}]],
    )
    assert rest.list_calls == 2, "the regressed event ends the watch with a relist"
    assert inf.rewinds == 2  # the event, then the list older than the cache
    assert sorted(inf.all_keys()) == ["ns/b"]
    gone = {o["metadata"]["name"] for o, n in seen if o is not None and n is None}
    assert gone == {"a", "c"}


def test_too_large_resource_version_is_never_retried_from_the_same_version() -> None:
    too_large = ApiError(504, "Timeout", "Timeout: Too large resource version: 10, current: 5",
                         {"causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}]})
    inf, rest, _ = run([("10", [obj("a", "9")]), ("5", [])], [too_large])
    assert rest.watch_from == ["10", "5"], "relisted, then watched from the server's version"
    assert inf.rewinds == 1 and len(inf) == 0


def test_repeated_server_errors_from_one_version_end_in_a_relist() -> None:
    errs = [ApiError(500, "InternalError", "boom") for _ in range(MAX_WATCH_FAILURES)]
    _, rest, _ = run([("10", [])], errs)
    assert rest.list_calls == 2
    assert rest.watch_from[:MAX_WATCH_FAILURES] == ["10"] * MAX_WATCH_FAILURES


def test_an_unreachable_server_is_resumed_from_the_same_version() -> None:
    errs = [ApiError(0, "Unreachable", "refused") for _ in range(MAX_WATCH_FAILURES + 1)]
    inf, rest, _ = run([("10", [])], errs)
    assert rest.list_calls == 1, "nothing suggests the version is wrong: resume once it answers"
    assert not inf.healthy and "refused" in inf.last_error


def test_health_needs_sync_success_and_recent_contact() -> None:
    now = [100.0]
    inf = Informer(None, "/x", name="x", clock=lambda: now[0])  # type: ignore[arg-type]  # never started: no Rest
    assert inf.health() == (False, "x: not synced yet")
    inf.synced.set()
    inf._contact()
    assert inf.health(max_silence=5) == (True, "ok")
    now[0] += 6
    assert inf.health(max_silence=5) == (False, "x: no answer from the API server for 6s")
    inf._failed("0 Unreachable: refused")
    assert inf.health() == (False, "x: 0 Unreachable: refused")


def test_health_grace_covers_a_watch_being_reopened() -> None:
    now = [100.0]
    inf = Informer(None, "/x", name="x", clock=lambda: now[0])  # type: ignore[arg-type]  # never started: no Rest
    inf.synced.set()
    inf._contact()
    inf._failed("0 Unreachable: connection dropped")
    assert inf.health(grace=10) == (True, "ok")
    now[0] += 10
    assert inf.health(grace=10) == (False, "x: 0 Unreachable: connection dropped")
