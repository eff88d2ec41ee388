"""List+watch caches: keep a local copy of a set of API objects and report every change.

The loop is the one client-go's reflector runs: list (in pages) to get a consistent snapshot and its
resourceVersion, watch from there with bookmarks so the version keeps moving, resume a broken watch
from the last version seen. It relists, and takes the server's answer as the truth, when resuming
cannot be right:

- 410 Gone/Expired: the version is older than the server keeps;
- 504 "Too large resource version": the server is behind the version the cache has seen, i.e. its
  state went back in time (etcd restored from a snapshot, a server restarted with older state);
  retrying that version would only resume once the server catches up and lose everything between;
- a watch event older than the version already seen (the same regression, seen mid-stream);
- the same version failing again and again on a server that answers.

A list whose version is older than the cache's is accepted as it is (counted in ``rewinds``): the
cache becomes the list, and handlers hear of every difference: objects gone are reported deleted,
new ones added, changed ones updated. (A server restored and already written past the cache's version
before the informer reconnects cannot be told from a healthy one; restoring etcd with
``--bump-revision --mark-compacted``, as Kubernetes documents, turns that case into a 410.)

Handlers receive (old, new) pairs but should treat them as hints: the cache is the truth.

Health: ``healthy`` is True while the last list or watch call succeeded; ``last_contact`` (monotonic)
is when the server last answered (a list, a watch opening, an event or a bookmark), ``last_error``
what failed last. ``health(max_silence, grace)`` folds them into one verdict for a readiness probe. A watch
silent for ``watch_idle_timeout`` seconds (a real server sends a bookmark every minute) is treated as
broken, so a server that accepts but never answers turns the informer unhealthy in bounded time.

Cost: one watch connection, the objects in memory, one full list at start and after each relist.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from lbspeaker.kube.rest import JSON, ApiError, Rest, error_from_status

log = logging.getLogger(__name__)

Handler = Callable[[JSON | None, JSON | None], None]

# Watch attempts from one resourceVersion that a server answering with errors may fail before a relist.
MAX_WATCH_FAILURES = 5


class _ServerBehind(Exception):
    """The server answered with a version older than one already seen."""


def object_key(obj: Mapping[str, Any]) -> str:
    """``namespace/name`` for namespaced objects, ``name`` for cluster-scoped ones."""
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace")
    return f"{ns}/{meta.get('name')}" if ns else str(meta.get("name"))


def _rv_number(rv: str | None) -> int | None:
    """resourceVersions are opaque, but every server in use writes etcd revisions (integers); ordering
    them is only used to notice a server going back in time."""
    try:
        return int(rv) if rv else None
    except ValueError:
        return None


class Informer:
    """A thread keeping ``path``'s objects (optionally filtered by selectors) in memory."""

    def __init__(self, rest: Rest, path: str, *, name: str, handler: Handler | None = None,
                 label_selector: str | None = None, field_selector: str | None = None,
                 page_size: int = 500, watch_timeout: tuple[int, int] = (240, 360),
                 watch_idle_timeout: float = 90.0, backoff: tuple[float, float] = (0.2, 5.0),
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rest = rest
        self.path = path
        self.name = name
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.page_size = page_size
        self.watch_timeout = watch_timeout
        self.watch_idle_timeout = watch_idle_timeout
        self.backoff = backoff  # first and longest wait between failed calls
        self.clock = clock
        self._handlers: list[Handler] = [handler] if handler else []
        self._store: dict[str, JSON] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.synced = threading.Event()
        self.resource_version: str | None = None
        self.relists = 0
        self.rewinds = 0  # lists (or watch events) older than what the cache had seen
        self.healthy = False  # the last list or watch call succeeded
        self.last_contact = float("-inf")
        self.last_error = ""
        self._newest: str | None = None  # the newest resourceVersion the cache has reflected
        self._thread: threading.Thread | None = None

    def add_handler(self, handler: Handler) -> None:
        self._handlers.append(handler)

    # -- reading the cache -------------------------------------------------------------------------
    def get(self, key: str) -> JSON | None:
        with self._lock:
            return self._store.get(key)

    def items(self) -> list[JSON]:
        with self._lock:
            return list(self._store.values())

    def all_keys(self) -> list[str]:
        with self._lock:
            return list(self._store)

    def __len__(self) -> int:
        with self._lock:
            return len(self._store)

    # -- health ------------------------------------------------------------------------------------
    def seconds_since_contact(self) -> float:
        return self.clock() - self.last_contact

    def health(self, max_silence: float | None = None, grace: float = 0.0) -> tuple[bool, str]:
        """(ok, why): synced, the last call succeeded (or failed less than ``grace`` seconds after the
        server last answered: a watch being re-opened), and, when given, the server answered within
        ``max_silence`` seconds. Use more than a minute for a real server (its bookmark interval)."""
        if not self.synced.is_set():
            return False, f"{self.name}: not synced yet" + (f" ({self.last_error})" if self.last_error else "")
        silence = self.seconds_since_contact()
        if not self.healthy and silence >= grace:
            return False, f"{self.name}: {self.last_error or 'API calls failing'}"
        if max_silence is not None and silence > max_silence:
            return False, f"{self.name}: no answer from the API server for {silence:.0f}s"
        return True, "ok"

    def _contact(self) -> None:
        self.healthy = True
        self.last_contact = self.clock()

    def _failed(self, why: str) -> None:
        self.healthy = False
        self.last_error = why

    # -- running -----------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"informer-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def wait_synced(self, timeout: float | None = None) -> bool:
        return self.synced.wait(timeout)

    def _selectors(self) -> dict[str, Any]:
        return {"labelSelector": self.label_selector, "fieldSelector": self.field_selector}

    def _run(self) -> None:
        first, longest = self.backoff
        delay = first
        failures = 0  # consecutive failed watches from the current resourceVersion
        while not self._stop.is_set():
            watched_from = self.resource_version
            try:
                if self.resource_version is None:
                    self._relist()
                    watched_from = self.resource_version
                self._watch()
                delay, failures = first, 0
            except _ServerBehind as exc:
                self._failed(str(exc))
                log.warning("%s: %s; relisting", self.name, exc)
                self.resource_version = None
            except ApiError as exc:
                self._failed(str(exc))
                if exc.gone or exc.too_large:
                    log.warning("%s: %s at resourceVersion %s; relisting", self.name,
                                "expired" if exc.gone else "the server is behind (state restored?)",
                                self.resource_version)
                    self.resource_version = None
                    continue
                failures = failures + 1 if self.resource_version == watched_from else 1
                if not exc.unreachable and failures >= MAX_WATCH_FAILURES:
                    log.warning("%s: %d failures from resourceVersion %s (%s); relisting", self.name,
                                failures, self.resource_version, exc)
                    self.resource_version, failures = None, 0
                    continue
                log.warning("%s: %s; retrying in %.1fs", self.name, exc, delay)
                self._stop.wait(delay)
                delay = min(delay * 2, longest)
            except Exception as exc:  # a bug must not kill the cache for good
                self._failed(f"{type(exc).__name__}: {exc}")
                log.exception("%s: unexpected error; relisting", self.name)
                self.resource_version = None
                self._stop.wait(delay)
                delay = min(delay * 2, longest)

    def _relist(self) -> None:
        items: dict[str, JSON] = {}
        cont: str | None = None
        while True:
            page = self.rest.get(self.path, limit=self.page_size, **{"continue": cont}, **self._selectors())
            self._contact()
            kind = str(page.get("kind", "List")).removesuffix("List")
            api_version = page.get("apiVersion")
            for obj in page.get("items") or []:
                # List items carry no kind/apiVersion; add them so cached objects look like watched ones.
                obj.setdefault("kind", kind)
                obj.setdefault("apiVersion", api_version)
                items[object_key(obj)] = obj
            meta = page.get("metadata") or {}
            cont = meta.get("continue") or None
            if not cont:
                rv = str(meta.get("resourceVersion", ""))
                break
        seen, listed = _rv_number(self._newest), _rv_number(rv)
        if seen is not None and listed is not None and listed < seen:
            self.rewinds += 1
            log.warning("%s: the server's state is older than the cache (resourceVersion %s < %s): taking "
                        "the server's state", self.name, rv, seen)
        with self._lock:
            old = self._store
            self._store = items
        self.resource_version = rv
        self._newest = rv
        self.relists += 1
        for key in old.keys() - items.keys():
            self._notify(old[key], None)
        for key, obj in items.items():
            prev = old.get(key)
            if prev != obj:
                self._notify(prev, obj)
        self.synced.set()

    def _watch(self) -> None:
        timeout = random.randint(*self.watch_timeout)
        query = {"resourceVersion": self.resource_version, "allowWatchBookmarks": True,
                 "timeoutSeconds": timeout, **self._selectors()}
        read_timeout = min(timeout + 30, self.watch_idle_timeout)
        for event in self.rest.watch(self.path, query, read_timeout=read_timeout, on_open=self._contact):
            if self._stop.is_set():
                return
            etype = event.get("type")
            obj = event.get("object") or {}
            if etype == "ERROR":
                raise error_from_status(obj)
            self._contact()
            rv = str((obj.get("metadata") or {}).get("resourceVersion") or "")
            if rv:
                current, got = _rv_number(self.resource_version), _rv_number(rv)
                if current is not None and got is not None and got < current:
                    self.rewinds += 1
                    raise _ServerBehind(f"watch event at resourceVersion {rv} after {current}")
            if etype == "BOOKMARK":
                self.resource_version = rv or self.resource_version
                self._newest = self.resource_version
                continue
            key = object_key(obj)
            with self._lock:
                prev = self._store.get(key)
                if etype == "DELETED":
                    self._store.pop(key, None)
                else:
                    self._store[key] = obj
            self.resource_version = rv or self.resource_version
            self._newest = self.resource_version
            self._notify(prev, None if etype == "DELETED" else obj)

    def _notify(self, old: JSON | None, new: JSON | None) -> None:
        for handler in self._handlers:
            try:
                handler(old, new)
            except Exception:
                log.exception("%s: handler failed", self.name)
