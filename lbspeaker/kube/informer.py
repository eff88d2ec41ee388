"""List+watch caches: keep a local copy of a set of API objects and report every change.

The loop is the one client-go's reflector runs: list (in pages) to get a consistent snapshot and its
resourceVersion, watch from there with bookmarks so the version keeps moving, resume a broken watch
from the last version seen, and relist only when the server says the version is too old (410 Gone).
Handlers receive (old, new) pairs but should treat them as hints: the cache is the truth.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Mapping
from typing import Any

from lbspeaker.kube.rest import JSON, ApiError, Rest

log = logging.getLogger(__name__)

Handler = Callable[[JSON | None, JSON | None], None]


def object_key(obj: Mapping[str, Any]) -> str:
    """``namespace/name`` for namespaced objects, ``name`` for cluster-scoped ones."""
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace")
    return f"{ns}/{meta.get('name')}" if ns else str(meta.get("name"))


class Informer:
    """A thread keeping ``path``'s objects (optionally filtered by selectors) in memory."""

    def __init__(self, rest: Rest, path: str, *, name: str, handler: Handler | None = None,
                 label_selector: str | None = None, field_selector: str | None = None,
                 page_size: int = 500, watch_timeout: tuple[int, int] = (240, 360)) -> None:
        self.rest = rest
        self.path = path
        self.name = name
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.page_size = page_size
        self.watch_timeout = watch_timeout
        self._handlers: list[Handler] = [handler] if handler else []
        self._store: dict[str, JSON] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.synced = threading.Event()
        self.resource_version: str | None = None
        self.relists = 0
        self.healthy = False  # the last list or watch call succeeded
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
        delay = 0.2
        while not self._stop.is_set():
            try:
                if self.resource_version is None:
                    self._relist()
                self._watch()
                delay = 0.2
            except ApiError as exc:
                self.healthy = False
                if exc.gone:
                    log.info("%s: resourceVersion %s expired, relisting", self.name, self.resource_version)
                    self.resource_version = None
                    continue
                log.warning("%s: %s; retrying in %.1fs", self.name, exc, delay)
                self._stop.wait(delay)
                delay = min(delay * 2, 5.0)
            except Exception:  # a bug must not kill the cache for good
                self.healthy = False
                log.exception("%s: unexpected error; relisting", self.name)
                self.resource_version = None
                self._stop.wait(delay)
                delay = min(delay * 2, 5.0)

    def _relist(self) -> None:
        items: dict[str, JSON] = {}
        cont: str | None = None
        while True:
            page = self.rest.get(self.path, limit=self.page_size, **{"continue": cont}, **self._selectors())
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
        with self._lock:
            old = self._store
            self._store = items
        self.resource_version = rv
        self.relists += 1
        self.healthy = True
        for key in old.keys() - items.keys():
            self._notify(old[key], None)
        for key, obj in items.items():
            prev = old.get(key)
            if prev is None or _rv(prev) != _rv(obj):
                self._notify(prev, obj)
        self.synced.set()

    def _watch(self) -> None:
        timeout = random.randint(*self.watch_timeout)
        query = {"resourceVersion": self.resource_version, "allowWatchBookmarks": True,
                 "timeoutSeconds": timeout, **self._selectors()}
        for event in self.rest.watch(self.path, query, read_timeout=timeout + 30):
            if self._stop.is_set():
                return
            self.healthy = True
            etype = event.get("type")
            obj = event.get("object") or {}
            if etype == "ERROR":
                code = int(obj.get("code") or 0)
                raise ApiError(code, str(obj.get("reason", "")), str(obj.get("message", "watch error")))
            rv = _rv(obj)
            if etype == "BOOKMARK":
                self.resource_version = rv or self.resource_version
                continue
            key = object_key(obj)
            with self._lock:
                prev = self._store.get(key)
                if etype == "DELETED":
                    self._store.pop(key, None)
                else:
                    self._store[key] = obj
            self.resource_version = rv or self.resource_version
            self._notify(prev, None if etype == "DELETED" else obj)

    def _notify(self, old: JSON | None, new: JSON | None) -> None:
        for handler in self._handlers:
            try:
                handler(old, new)
            except Exception:
                log.exception("%s: handler failed", self.name)


def _rv(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion", ""))
