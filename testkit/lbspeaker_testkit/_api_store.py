"""In-memory object store with kube-apiserver write semantics and a watch cache.

Holds every object as a plain dict that is never mutated once stored (so responses and watch events
can share it without copies), a single global resourceVersion counter, a bounded per-resource event
history (the watch cache), and the open watchers, which are fed by the writer under the store lock so
that a watch started from a resourceVersion sees every later event exactly once.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import json
import random
import threading
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from lbspeaker_testkit import _api_errors as errors
from lbspeaker_testkit._api_discovery import DEFAULT_VERSION
from lbspeaker_testkit._api_kinds import check_body_type, generation_tracked, prepare
from lbspeaker_testkit._api_patch import apply_json_patch, apply_merge_patch, apply_strategic_merge_patch
from lbspeaker_testkit._api_resources import BY_PATH, RESOURCES, ResourceInfo
from lbspeaker_testkit._api_schema import IP_MODE_ENABLED, Decoder
from lbspeaker_testkit._api_selectors import EVERYTHING, Selector
from lbspeaker_testkit._api_services import ServiceAllocator, rebuild_allocator, stale_status_errors

Obj = dict[str, Any]

INITIAL_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
_SYSTEM_META = ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation")
_NAME_SUFFIX_CHARS = "bcdfghjklmnpqrstvwxz2456789"
TOO_LARGE_WAIT_SECONDS = 3.0
ROOT_CA_DELAY_SECONDS = 0.05  # kube-controller-manager's root-ca-cert publisher reacts in tens of ms
ROOT_CA_CONFIGMAP = "kube-root-ca.crt"
ROOT_CA_DESCRIPTION = (
    "Contains a CA bundle that can be used to verify the kube-apiserver when using internal "
    "endpoints such as the internal service IP or kubernetes.default.svc. No other usage is "
    "guaranteed across distributions of Kubernetes clusters."
)
# the server speaks plain HTTP and has no CA; the ConfigMap exists because real namespaces always have it
ROOT_CA_PLACEHOLDER = (
    "-----BEGIN CERTIFICATE-----\nbGJzcGVha2VyIHRlc3QgQVBJIHNlcnZlcjogbm8gQ0E=\n-----END CERTIFICATE-----\n"
)


def now_rfc3339() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def with_rv(obj: Obj, rv: int) -> Obj:
    out = dict(obj)
    out["metadata"] = dict(obj.get("metadata") or {})
    out["metadata"]["resourceVersion"] = str(rv)
    return out


def _without_meta(obj: Obj) -> Obj:
    return {k: v for k, v in obj.items() if k != "metadata"}


def _strip_rv(obj: Obj) -> Obj:
    out = dict(obj)
    meta = dict(obj.get("metadata") or {})
    meta.pop("resourceVersion", None)
    out["metadata"] = meta
    return out


@dataclass
class StoredEvent:
    """One committed change, as kept in the watch cache."""

    rv: int
    type: str  # ADDED | MODIFIED | DELETED
    namespace: str
    obj: Obj
    prev: Obj | None
    encoded: dict[tuple[str, str, bool], bytes] = field(default_factory=dict)


class Watcher:
    """One open watch: a queue filled by writers and drained by the HTTP thread serving the stream."""

    def __init__(
        self, res: ResourceInfo, namespace: str, labels: Selector, fields: Selector, max_queue: int
    ) -> None:
        self.res = res
        self.namespace = namespace
        self.labels = labels
        self.fields = fields
        self.max_queue = max_queue
        self.cond = threading.Condition(threading.Lock())
        self.queue: deque[StoredEvent] = deque()
        self.closed = False
        self.close_reason = ""

    def push(self, ev: StoredEvent) -> None:
        with self.cond:
            if self.closed:
                return
            if len(self.queue) >= self.max_queue:
                # like the real cacher: a watcher that cannot keep up is terminated, the client re-watches
                self.closed = True
                self.close_reason = "watcher too slow"
            else:
                self.queue.append(ev)
            self.cond.notify()

    def close(self, reason: str = "closed") -> None:
        with self.cond:
            if not self.closed:
                self.closed = True
                self.close_reason = reason
            self.cond.notify()

    def take(self, timeout: float) -> list[StoredEvent]:
        """Wait up to ``timeout`` seconds for events; returns what is queued (maybe nothing)."""
        with self.cond:
            if not self.queue and not self.closed:
                self.cond.wait(timeout)
            out = list(self.queue)
            self.queue.clear()
            return out

    def passes(self, obj: Obj) -> bool:
        if not self.labels.empty:
            labels = (obj.get("metadata") or {}).get("labels") or {}
            if not self.labels.matches(labels):
                return False
        return self.fields.empty or self.fields.matches(self.res.field_set(obj))

    def convert(self, ev: StoredEvent) -> tuple[str, bool] | None:
        """The event type this watcher should see, and whether it carries the previous object; None to
        skip it. Mirrors the cacher: an update into the selection is ADDED, out of it is DELETED
        (carrying the previous state at the event's resourceVersion)."""
        cur = ev.type != "DELETED" and self.passes(ev.obj)
        old = ev.prev is not None and self.passes(ev.prev)
        if ev.type == "DELETED":
            return ("DELETED", False) if old else None
        if cur and old:
            return "MODIFIED", False
        if cur:
            return "ADDED", False
        if old:
            return "DELETED", True
        return None


def encode_event(res: ResourceInfo, etype: str, obj: Obj) -> bytes:
    body = {"type": etype, "object": {"kind": res.kind, "apiVersion": res.api_version, **res.to_view(obj)}}
    return json.dumps(body, separators=(",", ":")).encode() + b"\n"


def encode_stored_event(res: ResourceInfo, ev: StoredEvent, etype: str, as_prev: bool) -> bytes:
    key = (res.api_version, etype, as_prev)
    cached = ev.encoded.get(key)
    if cached is None:
        obj = ev.obj
        if as_prev and ev.prev is not None:
            obj = with_rv(ev.prev, ev.rv)
        cached = encode_event(res, etype, obj)
        ev.encoded[key] = cached
    return cached


@dataclass(frozen=True)
class StoreSnapshot:
    """Every object and the resourceVersion they were at: what an etcd snapshot holds."""

    rv: int
    objects: dict[str, dict[str, dict[str, Obj]]]

    def to_json(self) -> str:
        return json.dumps({"resourceVersion": self.rv, "objects": self.objects}, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> StoreSnapshot:
        doc = json.loads(text)
        return cls(int(doc["resourceVersion"]), doc["objects"])


@dataclass
class ListResult:
    items: list[Obj]
    resource_version: int
    continue_token: str
    remaining: int | None


class Store:
    """Objects, resourceVersions, history and watchers. All public methods are thread-safe."""

    def __init__(
        self,
        history_size: int = 5000,
        seed: int | None = None,
        version: tuple[int, int] = DEFAULT_VERSION,
        single_stack: bool = False,
        root_ca_delay: float = ROOT_CA_DELAY_SECONDS,
    ) -> None:
        if history_size < 1:
            raise ValueError("history_size must be at least 1")
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.rv = 0
        self.history_size = history_size
        self.ip_mode = version >= IP_MODE_ENABLED
        self.root_ca_delay = root_ca_delay
        self.objects: dict[str, dict[str, dict[str, Obj]]] = {}
        self.history: dict[str, deque[StoredEvent]] = {}
        self.evicted: set[str] = set()
        # resourceVersions below this are compacted (a restored server serves nothing older than its start)
        self.history_floor = 0
        self.watchers: dict[str, set[Watcher]] = {}
        self.alloc = ServiceAllocator(seed, single_stack)
        self._rng = random.Random(seed)
        self._snapshots: dict[tuple[str, int], list[tuple[tuple[str, str], Obj]]] = {}
        for name in INITIAL_NAMESPACES:
            self.create(BY_PATH[("", "v1", "namespaces")], "", {"metadata": {"name": name}})
            with self.lock:  # present from the start; the delayed publisher then finds it
                self._publish_root_ca(name)
        self.create(
            BY_PATH[("", "v1", "services")],
            "default",
            {
                "metadata": {
                    "name": "kubernetes",
                    "labels": {"component": "apiserver", "provider": "kubernetes"},
                },
                "spec": {
                    "clusterIP": "10.96.0.1",
                    "ports": [{"name": "https", "port": 443, "targetPort": 6443}],
                },
            },
        )

    # --- snapshots ------------------------------------------------------------------------------------------

    def snapshot(self) -> StoreSnapshot:
        """Every object and the current resourceVersion (an etcd snapshot)."""
        with self.lock:
            return StoreSnapshot(self.rv, copy.deepcopy(self.objects))

    def restore(self, snap: StoreSnapshot, bump_revision: int = 0) -> None:
        """Replace every object with ``snap``'s, as etcd restored from a snapshot under a restarted API
        server: the resourceVersion goes back to the snapshot's (plus ``bump_revision``, as
        ``etcdutl snapshot restore --bump-revision --mark-compacted`` does), open watches end, the watch
        history is empty, and nothing older than the restored version can be watched any more (410)."""
        if bump_revision < 0:
            raise ValueError("bump_revision must not be negative")
        with self.lock:
            for ws in self.watchers.values():
                for w in ws:
                    w.close("server restarted")
            self.objects = copy.deepcopy(snap.objects)
            self.rv = snap.rv + bump_revision
            self.history.clear()
            self.evicted.clear()
            self._snapshots.clear()
            self.history_floor = self.rv
            services = self.objects.get(BY_PATH[("", "v1", "services")].storage_key, {})
            rebuild_allocator(self.alloc, [o for objs in services.values() for o in objs.values()])
            self.changed.notify_all()

    # --- reads ----------------------------------------------------------------------------------------------

    def _bucket(self, res: ResourceInfo) -> dict[str, dict[str, Obj]]:
        return self.objects.setdefault(res.storage_key, {})

    def get(self, res: ResourceInfo, ns: str, name: str) -> Obj:
        with self.lock:
            obj = self._bucket(res).get(ns, {}).get(name)
        if obj is None:
            raise errors.not_found(res.plural, res.group, name)
        return obj

    def namespace_exists(self, name: str) -> bool:
        with self.lock:
            return name in self.objects.get("/namespaces", {}).get("", {})

    def _require_namespace(self, ns: str) -> None:
        nsobj = self.objects.get("/namespaces", {}).get("", {}).get(ns)
        if nsobj is None:
            raise errors.not_found("namespaces", "", ns)
        if (nsobj.get("status") or {}).get("phase") == "Terminating":
            raise errors.forbidden_error(
                "namespaces",
                "",
                ns,
                f"unable to create new content in namespace {ns} because it is being terminated",
            )

    def _current_items(self, res: ResourceInfo, ns: str) -> list[tuple[tuple[str, str], Obj]]:
        bucket = self._bucket(res)
        if ns:
            items = [((ns, n), o) for n, o in bucket.get(ns, {}).items()]
        else:
            items = [((s, n), o) for s, objs in bucket.items() for n, o in objs.items()]
        items.sort(key=lambda kv: kv[0])
        return items

    def _history_covers(self, res: ResourceInfo, rv: int) -> bool:
        if rv < self.history_floor:
            return False
        hist = self.history.get(res.storage_key)
        if res.storage_key not in self.evicted or not hist:
            return True
        return rv >= hist[0].rv - 1

    def _oldest(self, res: ResourceInfo) -> int:
        hist = self.history.get(res.storage_key)
        return max(hist[0].rv - 1 if hist else self.rv, self.history_floor)

    def _snapshot(self, res: ResourceInfo, rv: int) -> list[tuple[tuple[str, str], Obj]]:
        """All objects of ``res`` as they were at ``rv``, sorted by (namespace, name)."""
        if rv >= self.rv:
            return self._current_items(res, "")
        cached = self._snapshots.get((res.storage_key, rv))
        if cached is not None:
            return cached
        if not self._history_covers(res, rv):
            raise errors.expired(f"too old resource version: {rv} ({self._oldest(res)})")
        state = {key: obj for key, obj in self._current_items(res, "")}
        for ev in reversed(self.history.get(res.storage_key, deque())):
            if ev.rv <= rv:
                break
            key = (ev.namespace, str((ev.obj.get("metadata") or {}).get("name")))
            if ev.type == "ADDED":
                state.pop(key, None)
            elif ev.prev is not None:
                state[key] = ev.prev
        items = sorted(state.items(), key=lambda kv: kv[0])
        if len(self._snapshots) >= 16:
            self._snapshots.pop(next(iter(self._snapshots)))
        self._snapshots[(res.storage_key, rv)] = items
        return items

    def _wait_for_rv(self, rv: int) -> None:
        if rv > self.rv and not self.changed.wait_for(lambda: self.rv >= rv, TOO_LARGE_WAIT_SECONDS):
            raise errors.too_large_resource_version(rv, self.rv)

    def list_objects(
        self,
        res: ResourceInfo,
        ns: str,
        labels: Selector = EVERYTHING,
        fields: Selector = EVERYTHING,
        limit: int = 0,
        continue_token: str = "",
        resource_version: str = "",
        resource_version_match: str = "",
    ) -> ListResult:
        with self.lock:
            if continue_token:
                snap_rv, start = _decode_continue(continue_token)
                items = self._snapshot(res, snap_rv)
                list_rv = snap_rv
            else:
                start = None
                if resource_version_match == "Exact":
                    list_rv = _parse_rv(resource_version, "resourceVersion")
                    items = self._snapshot(res, list_rv)
                else:
                    if resource_version not in ("", "0"):
                        self._wait_for_rv(_parse_rv(resource_version, "resourceVersion"))
                    list_rv = self.rv
                    items = self._current_items(res, ns)
        selected: list[Obj] = []
        next_key: tuple[str, str] | None = None
        remaining = 0
        for key, obj in items:
            if ns and key[0] != ns:
                continue
            if start is not None and key <= start:
                continue
            if not labels.empty and not labels.matches((obj.get("metadata") or {}).get("labels") or {}):
                continue
            if not fields.empty and not fields.matches(res.field_set(obj)):
                continue
            if limit and len(selected) >= limit:
                remaining += 1
                continue
            selected.append(obj)
            next_key = key
        token = ""
        if remaining and next_key is not None:
            token = _encode_continue(list_rv, next_key)
        return ListResult(
            selected, list_rv, token, remaining if token and labels.empty and fields.empty else None
        )

    # --- commit ---------------------------------------------------------------------------------------------

    def _commit(self, res: ResourceInfo, etype: str, ns: str, name: str, obj: Obj, prev: Obj | None) -> Obj:
        self.rv += 1
        stored = with_rv(obj, self.rv)
        bucket = self._bucket(res)
        if etype == "DELETED":
            objs = bucket.get(ns)
            if objs is not None:
                objs.pop(name, None)
                if not objs:
                    bucket.pop(ns, None)
        else:
            bucket.setdefault(ns, {})[name] = stored
        ev = StoredEvent(self.rv, etype, ns, stored, prev)
        hist = self.history.get(res.storage_key)
        if hist is None:
            hist = self.history[res.storage_key] = deque(maxlen=self.history_size)
        if len(hist) == self.history_size:
            self.evicted.add(res.storage_key)
        hist.append(ev)
        for w in self.watchers.get(res.storage_key, ()):
            if not w.namespace or w.namespace == ns:
                w.push(ev)
        self.changed.notify_all()
        return stored

    # --- writes ---------------------------------------------------------------------------------------------

    def _generate_name(self, base: str) -> str:
        base = base[:58]
        return base + "".join(self._rng.choice(_NAME_SUFFIX_CHARS) for _ in range(5))

    def create(
        self, res: ResourceInfo, ns: str, body: Any, dry_run: bool = False, decoder: Decoder | None = None
    ) -> Obj:
        obj = self._decode_body(res, body, decoder)
        meta = obj["metadata"]
        if meta.get("resourceVersion"):
            raise errors.bad_request("resourceVersion should not be set on objects to be created")
        with self.lock:
            return self._create_locked(res, ns, obj, dry_run)

    def _create_locked(self, res: ResourceInfo, ns: str, obj: Obj, dry_run: bool) -> Obj:
        meta = obj["metadata"]
        self._check_namespace_field(res, ns, meta)
        if res.namespaced:
            self._require_namespace(ns)
        if not meta.get("name") and isinstance(meta.get("generateName"), str) and meta["generateName"]:
            for _ in range(8):
                candidate = self._generate_name(meta["generateName"])
                if candidate not in self._bucket(res).get(ns, {}):
                    meta["name"] = candidate
                    break
        for key in (*_SYSTEM_META, "resourceVersion", "selfLink", "managedFields"):
            meta.pop(key, None)
        errs, plan = prepare(res, obj, None, "", self.alloc, self.ip_mode)
        name = str(meta.get("name") or "")
        if errs:
            raise errors.invalid_object(res.kind, res.group, name, errs)
        if name in self._bucket(res).get(ns, {}):
            raise errors.already_exists(res.plural, res.group, name)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_rfc3339()
        if generation_tracked(res):
            meta["generation"] = 1
        obj = _order(obj)
        if dry_run:
            return with_rv(obj, self.rv)
        if plan is not None:
            self.alloc.apply(plan)
        stored = self._commit(res, "ADDED", ns, name, obj, None)
        if res.plural == "namespaces":
            timer = threading.Timer(self.root_ca_delay, self._publish_root_ca_later, (name, meta["uid"]))
            timer.daemon = True
            timer.start()
        return stored

    def _publish_root_ca_later(self, ns: str, uid: str) -> None:
        """kube-controller-manager's root-ca-cert publisher: shortly after a namespace appears (not in the
        same write), its ``kube-root-ca.crt`` ConfigMap does."""
        with self.lock:
            nsobj = self.objects.get("/namespaces", {}).get("", {}).get(ns)
            if nsobj is None or nsobj["metadata"].get("uid") != uid or nsobj["metadata"].get("deletionTimestamp"):
                return
            if ROOT_CA_CONFIGMAP in self._bucket(BY_PATH[("", "v1", "configmaps")]).get(ns, {}):
                return
            self._publish_root_ca(ns)

    def _publish_root_ca(self, ns: str) -> None:
        """What kube-controller-manager's root-ca-cert publisher does for every new namespace."""
        cm = BY_PATH[("", "v1", "configmaps")]
        obj = {
            "metadata": {
                "name": ROOT_CA_CONFIGMAP,
                "namespace": ns,
                "uid": str(uuid.uuid4()),
                "creationTimestamp": now_rfc3339(),
                "annotations": {"kubernetes.io/description": ROOT_CA_DESCRIPTION},
            },
            "data": {"ca.crt": ROOT_CA_PLACEHOLDER},
        }
        self._commit(cm, "ADDED", ns, ROOT_CA_CONFIGMAP, obj, None)

    def _decode_body(self, res: ResourceInfo, body: Any, decoder: Decoder | None) -> Obj:
        if not isinstance(body, dict):
            raise errors.bad_request(f"the body of the request must be a JSON object describing a {res.kind}")
        check_body_type(res, body)
        if decoder is not None:
            body = decoder.decode(body)
        view = {k: v for k, v in body.items() if k not in ("kind", "apiVersion")}
        obj = res.from_view(view)
        meta = obj.get("metadata")
        if meta is None:
            meta = obj["metadata"] = {}
        if not isinstance(meta, dict):
            raise errors.bad_request("metadata must be an object")
        return obj

    @staticmethod
    def _check_namespace_field(res: ResourceInfo, ns: str, meta: Obj) -> None:
        if res.namespaced:
            given = meta.get("namespace")
            if given and given != ns:
                raise errors.bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            meta["namespace"] = ns
        else:
            meta.pop("namespace", None)

    def update(
        self,
        res: ResourceInfo,
        ns: str,
        name: str,
        body: Any,
        subresource: str = "",
        dry_run: bool = False,
        decoder: Decoder | None = None,
    ) -> tuple[Obj, bool]:
        """PUT. Returns (object, created)."""
        obj = self._decode_body(res, body, decoder)
        meta = obj["metadata"]
        if meta.get("name") and meta["name"] != name:
            raise errors.bad_request(
                f"the name of the object ({meta['name']}) does not match the name on the URL ({name})"
            )
        meta["name"] = name
        with self.lock:
            self._check_namespace_field(res, ns, meta)
            old = self._bucket(res).get(ns, {}).get(name)
            if old is None:
                if res.allow_create_on_update and not subresource:
                    if meta.get("resourceVersion"):
                        raise errors.not_found(res.plural, res.group, name)
                    return self._create_locked(res, ns, obj, dry_run), True
                raise errors.not_found(res.plural, res.group, name)
            return self._update_locked(res, ns, name, obj, old, subresource, dry_run), False

    def _update_locked(
        self, res: ResourceInfo, ns: str, name: str, new: Obj, old: Obj, subresource: str, dry_run: bool
    ) -> Obj:
        meta = new["metadata"]
        old_meta = old.get("metadata") or {}
        want_rv = meta.get("resourceVersion")
        if want_rv and str(want_rv) != old_meta.get("resourceVersion"):
            if res.plural == "services" and subresource == "status" and self.ip_mode:
                errs = stale_status_errors(new)
                if errs:
                    raise errors.invalid_object(res.kind, res.group, name, errs)
            raise errors.conflict(res.plural, res.group, name, errors.MODIFIED_CONFLICT)
        if meta.get("uid") and meta["uid"] != old_meta.get("uid"):
            raise errors.conflict(
                res.plural,
                res.group,
                name,
                f"Precondition failed: UID in precondition: {meta['uid']}, UID in object meta: "
                f"{old_meta.get('uid')}",
            )
        if subresource == "status":
            status = new.get("status")
            new = copy.deepcopy(old)
            new["metadata"].update({k: v for k, v in meta.items() if k in ("labels", "annotations")})
            if status is None:
                new.pop("status", None)
            else:
                new["status"] = status
        elif res.status_subresource:
            if "status" in old:
                new["status"] = copy.deepcopy(old["status"])
            else:
                new.pop("status", None)
        meta = new["metadata"]
        for key in _SYSTEM_META:
            if key in old_meta:
                meta[key] = copy.deepcopy(old_meta[key])
            else:
                meta.pop(key, None)
        meta["namespace"] = old_meta.get("namespace")
        if not res.namespaced:
            meta.pop("namespace", None)
        meta.pop("selfLink", None)
        meta.pop("managedFields", None)
        if old_meta.get("deletionTimestamp"):
            added = set(meta.get("finalizers") or []) - set(old_meta.get("finalizers") or [])
            if added:
                raise errors.invalid_object(
                    res.kind,
                    res.group,
                    name,
                    [
                        errors.forbidden(
                            "metadata.finalizers",
                            f"no new finalizers can be added if the object is being deleted, "
                            f"found new finalizers {sorted(added)}",
                        )
                    ],
                )
        errs, plan = prepare(res, new, old, subresource, self.alloc, self.ip_mode)
        if errs:
            raise errors.invalid_object(res.kind, res.group, name, errs)
        if generation_tracked(res) and _without_meta(new) != _without_meta(old):
            meta["generation"] = int(old_meta.get("generation") or 0) + 1
        new = _order(new)
        if _strip_rv(new) == _strip_rv(old):
            return old
        if dry_run:
            return with_rv(new, self.rv)
        if plan is not None:
            self.alloc.apply(plan)
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            return self._remove_locked(res, ns, name, new)
        return self._commit(res, "MODIFIED", ns, name, new, old)

    def patch(
        self,
        res: ResourceInfo,
        ns: str,
        name: str,
        patch_type: str,
        patch: Any,
        subresource: str = "",
        dry_run: bool = False,
        decoder: Decoder | None = None,
    ) -> Obj:
        with self.lock:
            old = self._bucket(res).get(ns, {}).get(name)
            if old is None:
                raise errors.not_found(res.plural, res.group, name)
            view = {"kind": res.kind, "apiVersion": res.api_version, **res.to_view(old)}
            if patch_type == "json":
                patched = apply_json_patch(view, patch)
            elif patch_type == "merge":
                if not isinstance(patch, dict):
                    raise errors.bad_request("merge patch must be a JSON object")
                patched = apply_merge_patch(view, patch)
            else:
                patched = apply_strategic_merge_patch(view, patch)
            new = self._decode_body(res, patched, decoder)
            meta = new["metadata"]
            if meta.get("name") != name:
                raise errors.bad_request(
                    f"the name of the object ({meta.get('name')}) does not match the name on the URL ({name})"
                )
            self._check_namespace_field(res, ns, meta)
            return self._update_locked(res, ns, name, new, old, subresource, dry_run)

    def _remove_locked(self, res: ResourceInfo, ns: str, name: str, old: Obj) -> Obj:
        if res.plural == "services":
            self.alloc.release_service(old)
        return self._commit(res, "DELETED", ns, name, old, old)

    def delete(
        self, res: ResourceInfo, ns: str, name: str, options: Obj | None = None, dry_run: bool = False
    ) -> tuple[Obj, bool]:
        """DELETE. Returns (object, deleted-now); an object with finalizers only gets a deletionTimestamp."""
        with self.lock:
            old = self._bucket(res).get(ns, {}).get(name)
            if old is None:
                raise errors.not_found(res.plural, res.group, name)
            meta = old.get("metadata") or {}
            pre = (options or {}).get("preconditions") or {}
            if pre.get("uid") and pre["uid"] != meta.get("uid"):
                raise errors.conflict(
                    res.plural,
                    res.group,
                    name,
                    f"Precondition failed: UID in precondition: {pre['uid']}, UID in object meta: "
                    f"{meta.get('uid')}",
                )
            if pre.get("resourceVersion") and pre["resourceVersion"] != meta.get("resourceVersion"):
                raise errors.conflict(
                    res.plural,
                    res.group,
                    name,
                    f"Precondition failed: ResourceVersion in precondition: "
                    f"{pre['resourceVersion']}, ResourceVersion in object meta: "
                    f"{meta.get('resourceVersion')}",
                )
            if dry_run:
                return old, True
            if res.plural == "namespaces":
                return self._delete_namespace_locked(res, name, old), True
            if meta.get("finalizers"):
                if meta.get("deletionTimestamp"):
                    return old, False
                marked = copy.deepcopy(old)
                marked["metadata"]["deletionTimestamp"] = now_rfc3339()
                marked["metadata"]["deletionGracePeriodSeconds"] = 0
                return self._commit(res, "MODIFIED", ns, name, _strip_rv(marked), old), False
            return self._remove_locked(res, ns, name, old), True

    def _delete_namespace_locked(self, res: ResourceInfo, name: str, old: Obj) -> Obj:
        terminating = copy.deepcopy(old)
        terminating["metadata"]["deletionTimestamp"] = now_rfc3339()
        terminating["metadata"]["deletionGracePeriodSeconds"] = 0
        terminating["status"] = {"phase": "Terminating"}
        marked = self._commit(res, "MODIFIED", "", name, _strip_rv(terminating), old)
        # the namespace controller's job, done at once: empty the namespace, then drop it
        seen: set[str] = set()
        for other in RESOURCES:
            if not other.namespaced or other.storage_key in seen:
                continue
            seen.add(other.storage_key)
            for obj_name, obj in sorted(self._bucket(other).get(name, {}).items()):
                self._remove_locked(other, name, obj_name, obj)
        self._commit(res, "DELETED", "", name, marked, marked)
        return marked

    def delete_collection(
        self, res: ResourceInfo, ns: str, labels: Selector, fields: Selector, dry_run: bool = False
    ) -> int:
        with self.lock:
            victims = [
                obj
                for _, obj in self._current_items(res, ns)
                if (labels.empty or labels.matches((obj.get("metadata") or {}).get("labels") or {}))
                and (fields.empty or fields.matches(res.field_set(obj)))
            ]
            for obj in victims:
                meta = obj["metadata"]
                self.delete(res, str(meta.get("namespace") or ""), str(meta["name"]), None, dry_run)
            return len(victims)

    # --- watch ----------------------------------------------------------------------------------------------

    def watch(
        self,
        res: ResourceInfo,
        ns: str,
        labels: Selector,
        fields: Selector,
        resource_version: str,
        send_initial: bool | None,
        max_queue: int,
    ) -> tuple[Watcher, list[tuple[str, Obj]], int]:
        """Register a watcher. Returns it, the synthetic ADDED events to send first (already filtered),
        and the resourceVersion those bring the client to."""
        w = Watcher(res, ns, labels, fields, max_queue)
        backlog: list[tuple[str, Obj]] = []
        with self.lock:
            initial = resource_version in ("", "0") if send_initial is None else send_initial
            if resource_version not in ("", "0"):
                rv = _parse_rv(resource_version, "resourceVersion")
                self._wait_for_rv(rv)
            else:
                rv = self.rv
            if send_initial:
                # streaming list: the current state (not older than rv), then changes after it
                rv = self.rv
            if initial:
                items = self._current_items(res, ns) if rv >= self.rv else self._snapshot(res, rv)
                for key, obj in items:
                    if (not ns or key[0] == ns) and w.passes(obj):
                        backlog.append(("ADDED", obj))
            if rv < self.rv:
                if not self._history_covers(res, rv):
                    raise errors.expired(f"too old resource version: {rv} ({self._oldest(res)})")
                pending: list[StoredEvent] = []
                for ev in reversed(self.history.get(res.storage_key, deque())):
                    if ev.rv <= rv:
                        break
                    if not ns or ev.namespace == ns:
                        pending.append(ev)
                for ev in reversed(pending):
                    w.queue.append(ev)
            self.watchers.setdefault(res.storage_key, set()).add(w)
            return w, backlog, self.rv

    def unwatch(self, w: Watcher) -> None:
        with self.lock:
            self.watchers.get(w.res.storage_key, set()).discard(w)

    def bookmark_rv(self, w: Watcher) -> int | None:
        """The resourceVersion a bookmark may carry now: every event up to it was handed to ``w``."""
        with self.lock, w.cond:
            return None if w.queue else self.rv

    def close_all_watchers(self, reason: str) -> None:
        with self.lock:
            for ws in self.watchers.values():
                for w in ws:
                    w.close(reason)

    def watcher_count(self) -> int:
        with self.lock:
            return sum(len(ws) for ws in self.watchers.values())


def _parse_rv(value: str, what: str) -> int:
    try:
        rv = int(value)
    except ValueError:
        raise errors.bad_request(f"invalid {what} {value!r}: must be an integer") from None
    if rv < 0:
        raise errors.bad_request(f"invalid {what} {value!r}: must not be negative")
    return rv


def _encode_continue(rv: int, key: tuple[str, str]) -> str:
    raw = json.dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": f"{key[0]}/{key[1]}\x00"})
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_continue(token: str) -> tuple[int, tuple[str, str]]:
    try:
        padded = token + "=" * (-len(token) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
        rv = int(data["rv"])
        ns, _, name = str(data["start"]).rstrip("\x00").partition("/")
    except (ValueError, KeyError, TypeError):
        raise errors.bad_request(
            "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)"
        ) from None
    return rv, (ns, name)


_TOP_ORDER = ("metadata", "spec", "data", "binaryData", "stringData", "type", "status")


def _order(obj: Obj) -> Obj:
    """Key order like the real server's output (metadata, spec, ..., status); cosmetic only."""
    head = [k for k in _TOP_ORDER if k in obj and k != "status"]
    rest = [k for k in obj if k not in _TOP_ORDER]
    tail = ["status"] if "status" in obj else []
    return {k: obj[k] for k in (*head, *rest, *tail)}
