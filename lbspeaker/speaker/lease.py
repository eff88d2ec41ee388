"""The speaker Lease, in one place: its schema, the typed view every reader uses, and the keeper of our own.

Schema: Lease ``speaker-<node>`` in the speaker namespace, label ``app.kubernetes.io/component=speaker``,
owned by the Node (so it goes when the Node is deleted), ``holderIdentity`` the node name while the
speaker runs (unset once it left), and annotations:

* ``lbspeaker.io/heartbeat-addr``: ``host:port`` of its membership socket;
* ``lbspeaker.io/subnets``, ``lbspeaker.io/interfaces-up``: its up interfaces (``Link``), which the
  election's on-subnet rule reads for every node;
* ``lbspeaker.io/boot``: its boot number, one more at every start (replay protection: datagrams of an
  older boot are refused); kept across restarts because the Lease is released, never deleted;
* ``lbspeaker.io/state``: ``<version> serving``, ``<version> joining`` or ``left``: its membership state
  as of its last write (a baseline; datagrams carry anything newer);
* ``lbspeaker.io/voted-dead``: ``<boot>.<version> <voter>``, written by the other member of a
  two-member cluster when it no longer hears this one (see ``membership.detector``);
* ``lbspeaker.io/bfd``: ``peer=state`` per BFD session (``192.0.2.1=up,2001:db8::1=down``), for
  ``lbspeaker status`` (written at the next renewal after a change).

API writes: one PUT per ``renew_every`` (default 10 s, the rate of kubelet's node Leases) whatever the
number of IPs, one more when the published data (interfaces, state) changes, and in a two-member
cluster a PUT every ``fence_after / 4`` while the peer cannot be heard. Every write carries the
resourceVersion of the last one (optimistic concurrency): a conflict means someone else wrote.
Readers must not recompute anything when only ``renewTime`` moved (``SpeakerLease.content``).
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from lbspeaker.hostport import HostPortError, parse_peer
from lbspeaker.kube.rest import ApiError, Rest, path_for
from lbspeaker.kube.timefmt import now_micro, parse_time

log = logging.getLogger(__name__)

LEASE_PREFIX = "speaker-"
LEASE_API = "coordination.k8s.io/v1"
COMPONENT_LABEL = "app.kubernetes.io/component"
COMPONENT = "speaker"

HEARTBEAT_ANNOTATION = "lbspeaker.io/heartbeat-addr"
SUBNETS_ANNOTATION = "lbspeaker.io/subnets"
INTERFACES_UP_ANNOTATION = "lbspeaker.io/interfaces-up"
BOOT_ANNOTATION = "lbspeaker.io/boot"
STATE_ANNOTATION = "lbspeaker.io/state"
VOTED_DEAD_ANNOTATION = "lbspeaker.io/voted-dead"
BFD_ANNOTATION = "lbspeaker.io/bfd"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Link:
    """A node's data path as its speaker publishes it: subnets of up interfaces, and whether any is up."""

    subnets: tuple[Network, ...] = ()
    any_up: bool = False


def format_subnets(subnets: Iterable[Network]) -> str:
    return ",".join(str(n) for n in sorted(set(subnets), key=lambda n: (n.version, n)))


def parse_link(annotations: Mapping[str, Any]) -> Link:
    """A peer's published data path; malformed entries are skipped, never fatal."""
    subnets: list[Network] = []
    for part in str(annotations.get(SUBNETS_ANNOTATION) or "").split(",")[:256]:
        part = part.strip()
        if not part:
            continue
        try:
            subnets.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            continue
    up = str(annotations.get(INTERFACES_UP_ANNOTATION) or "").strip().lower() == "true"
    return Link(tuple(subnets), up or bool(subnets))


def parse_bfd_annotation(text: str) -> dict[str, str]:
    """peer -> BFD session state from ``BFD_ANNOTATION``'s text; malformed items are skipped."""
    out: dict[str, str] = {}
    for item in text.split(",")[:256]:
        peer, sep, state = item.strip().partition("=")
        if sep and peer and state:
            out[peer] = state
    return out


def lease_name(node: str) -> str:
    return f"{LEASE_PREFIX}{node}"


def node_of(lease: Mapping[str, Any]) -> str | None:
    """The node a speaker Lease belongs to, or None for other Leases in the namespace."""
    name = str((lease.get("metadata") or {}).get("name") or "")
    return name[len(LEASE_PREFIX):] if name.startswith(LEASE_PREFIX) and len(name) > len(LEASE_PREFIX) else None


def peer_address(text: str | None) -> tuple[str, int] | None:
    """A published ``host:port`` (IP literals only), or None when it is missing or malformed."""
    if not text:
        return None
    try:
        return parse_peer(text)
    except HostPortError:
        return None


@dataclass(frozen=True)
class SpeakerLease:
    """A speaker Lease as every reader sees it; malformed fields read as absent, never raise."""

    node: str
    holder: str | None
    renew_time: float | None  # Unix seconds
    duration: float
    heartbeat_addr: tuple[str, int] | None
    boot: int
    version: int
    serving: bool
    left: bool
    link: Link
    voted_dead: tuple[int, int, str] | None  # (boot, version, voter)
    resource_version: str

    @property
    def content(self) -> tuple[object, ...]:
        """Everything but renewTime and resourceVersion: a change here is worth a recompute."""
        return (self.holder, self.heartbeat_addr, self.boot, self.version, self.serving, self.left, self.link,
                self.voted_dead, self.duration)


def _int(text: object) -> int:
    try:
        value = int(str(text).strip())
    except (TypeError, ValueError):
        return 0
    return value if 0 <= value < 1 << 63 else 0


def speaker_lease(obj: Mapping[str, Any]) -> SpeakerLease | None:
    """The view of a cached Lease object, or None when it is not a speaker Lease."""
    node = node_of(obj)
    if node is None:
        return None
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    ann = meta.get("annotations") or {}
    try:
        duration = float(spec.get("leaseDurationSeconds") or 0)
    except (TypeError, ValueError):
        duration = 0.0
    holder = spec.get("holderIdentity")
    renew = spec.get("renewTime")
    state = str(ann.get(STATE_ANNOTATION) or "").split()
    version = _int(state[0]) if state else 0
    left = state == ["left"]
    voted: tuple[int, int, str] | None = None
    mark = str(ann.get(VOTED_DEAD_ANNOTATION) or "").split()
    if len(mark) == 2 and mark[0].count(".") == 1:
        b, v = mark[0].split(".")
        voted = (_int(b), _int(v), mark[1])
    return SpeakerLease(
        node=node,
        holder=str(holder) if holder else None,
        renew_time=parse_time(renew) if isinstance(renew, str) else None,
        duration=duration,
        heartbeat_addr=peer_address(str(ann.get(HEARTBEAT_ANNOTATION) or "") or None),
        boot=_int(ann.get(BOOT_ANNOTATION)),
        version=version,
        serving=len(state) == 2 and state[1] == "serving",
        left=left,
        link=parse_link(ann),
        voted_dead=voted,
        resource_version=str(meta.get("resourceVersion") or ""),
    )


def state_text(version: int, serving: bool, left: bool = False) -> str:
    return "left" if left else f"{version} {'serving' if serving else 'joining'}"


class LeaseKeeper:
    """Creates, renews and finally releases our speaker Lease (renewals from a background thread).

    ``annotations()`` gives the published annotations (heartbeat address, link, state); ``owner()`` the
    Node's ownerReference once known. ``on_voted_dead(boot, version)`` is called when a write finds a
    peer's vote against us in the Lease. Every call has the Rest client's explicit timeouts; none is
    made from the reconcile loop.
    """

    def __init__(self, rest: Rest, namespace: str, node: str, *, annotations: Callable[[], Mapping[str, str]],
                 owner: Callable[[], Mapping[str, Any] | None] = lambda: None,
                 on_voted_dead: Callable[[int, int], None] | None = None,
                 duration: int = 40, renew_every: float = 10.0) -> None:
        if not 0 < renew_every < duration:
            raise ValueError("need 0 < lease renew interval < lease duration")
        self.rest = rest
        self.namespace = namespace
        self.node = node
        self.name = lease_name(node)
        self.duration = duration
        self.renew_every = renew_every
        self.boot = 0
        self._annotations = annotations
        self._owner = owner
        self._on_voted_dead = on_voted_dead
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()  # one write at a time: renewals and witness writes share _last
        self._last: dict[str, Any] | None = None
        self._written: dict[str, str] = {}
        self._thread: threading.Thread | None = None
        self.writes = 0
        self.failures = 0
        self.last_ok: float | None = None  # monotonic time of the last successful write

    @property
    def path(self) -> str:
        return path_for(LEASE_API, "leases", self.namespace, self.name)

    def acquire(self, stop: threading.Event | None = None) -> int:
        """Read our previous boot number, take the next one and write the Lease; retries until it works."""
        delay = 0.2
        while True:
            try:
                with self._lock:
                    current = self._current()
                    previous = speaker_lease(current) if current is not None else None
                    self.boot = (previous.boot if previous is not None else 0) + 1
                    self._last = current
                    self._put(dict(self._annotations()))
                log.info("lease %s/%s held, boot %d", self.namespace, self.name, self.boot)
                return self.boot
            except ApiError as exc:
                log.warning("lease %s/%s not written yet: %s; retrying", self.namespace, self.name, exc)
                if stop is not None and stop.wait(delay):
                    raise
                delay = min(delay * 2, 5.0)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="lease-keeper", daemon=True)
        self._thread.start()

    def poke(self) -> None:
        """Write now if the annotations changed (interfaces, state), not at the next renewal."""
        self._wake.set()

    def stop(self, release: bool = True) -> None:
        """Stop renewing; with ``release``, mark the Lease left (peers drop us at once; the boot stays)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if release and self.boot:
            try:
                with self._lock:
                    annotations = dict(self._annotations())
                    annotations[STATE_ANNOTATION] = state_text(0, False, left=True)
                    self._put(annotations, holder=False)
                log.info("released lease %s/%s", self.namespace, self.name)
            except ApiError as exc:
                log.warning("could not release lease %s/%s: %s", self.namespace, self.name, exc)

    def renew(self) -> None:
        """One write (a read and a second write after a conflict)."""
        with self._lock:
            self._put(dict(self._annotations()))

    def witness(self) -> tuple[bool, float]:
        """Two-member mode: write our Lease now under optimistic concurrency; (succeeded, sent at)."""
        sent_at = time.monotonic()
        with self._lock:
            try:
                self._last = self._write(self._body(dict(self._annotations()), holder=True))
            except ApiError as exc:
                if exc.conflict:
                    self._reread()
                return False, sent_at
            self.writes += 1
            self.last_ok = time.monotonic()
        return True, sent_at

    def vote_dead(self, peer: Mapping[str, Any], boot: int, version: int) -> bool:
        """Two-member mode: write our vote against (boot, version) into the peer's Lease, exactly as we
        last saw it (its resourceVersion): fails if the peer wrote since."""
        meta = dict(peer.get("metadata") or {})
        body = {**peer, "metadata": {**meta, "annotations": {**(meta.get("annotations") or {}),
                                                            VOTED_DEAD_ANNOTATION: f"{boot}.{version} {self.node}"}}}
        name = str(meta.get("name") or "")
        try:
            self.rest.request("PUT", path_for(LEASE_API, "leases", self.namespace, name), body=body)
        except ApiError as exc:
            if not exc.conflict:
                log.warning("vote against %s not written: %s", name, exc)
            return False
        log.warning("voted %s dead (boot %d, version %d) in its Lease: it no longer answers us", name, boot,
                    version)
        return True

    # -- writing ---------------------------------------------------------------------------------------

    def _body(self, annotations: Mapping[str, str], holder: bool = True) -> dict[str, Any]:
        last = self._last
        now = now_micro()
        ann = dict(annotations)
        ann[BOOT_ANNOTATION] = str(self.boot)
        meta: dict[str, Any] = {"name": self.name, "namespace": self.namespace,
                                "labels": {COMPONENT_LABEL: COMPONENT}, "annotations": ann}
        owner = self._owner()
        if owner is not None:
            meta["ownerReferences"] = [dict(owner)]
        spec: dict[str, Any] = {"leaseDurationSeconds": self.duration, "renewTime": now,
                                "acquireTime": ((last or {}).get("spec") or {}).get("acquireTime") or now}
        if holder:
            spec["holderIdentity"] = self.node
        if last is not None:
            meta["resourceVersion"] = (last.get("metadata") or {}).get("resourceVersion")
        return {"apiVersion": LEASE_API, "kind": "Lease", "metadata": meta, "spec": spec}

    def _write(self, body: dict[str, Any]) -> dict[str, Any]:
        if body["metadata"].get("resourceVersion"):
            return self.rest.request("PUT", self.path, body=body)
        return self.rest.request("POST", path_for(LEASE_API, "leases", self.namespace), body=body)

    def _put(self, annotations: Mapping[str, str], holder: bool = True) -> None:
        try:
            self._last = self._write(self._body(annotations, holder))
        except ApiError as exc:
            if not (exc.conflict or exc.not_found):
                raise
            # Someone else wrote (a peer's vote, a human) or deleted it: look, then write afresh.
            self._reread()
            self._last = self._write(self._body(annotations, holder))
        self._written = dict(annotations)
        self.writes += 1
        self.last_ok = time.monotonic()

    def _current(self) -> dict[str, Any] | None:
        """Our Lease as the API server has it now, or None when there is none."""
        try:
            return self.rest.get(self.path)
        except ApiError as exc:
            if not exc.not_found:
                raise
            return None

    def _reread(self) -> None:
        current = self._current()
        self._last = current
        view = speaker_lease(current) if current is not None else None
        if view is not None and view.voted_dead is not None and view.voted_dead[0] == self.boot \
                and self._on_voted_dead is not None:
            self._on_voted_dead(view.voted_dead[0], view.voted_dead[1])

    def _run(self) -> None:
        due = time.monotonic() + self.renew_every
        while not self._stop.is_set():
            changed = dict(self._annotations()) != self._written
            if changed or time.monotonic() >= due:
                try:
                    self.renew()
                    due = time.monotonic() + self.renew_every
                except ApiError as exc:
                    self.failures += 1
                    log.warning("lease %s/%s not renewed: %s", self.namespace, self.name, exc)
                    due = time.monotonic() + min(1.0, self.renew_every)  # do not let it lapse over one error
                except Exception:
                    self.failures += 1
                    log.exception("lease %s/%s renewal failed", self.namespace, self.name)
                    due = time.monotonic() + self.renew_every
            self._wake.wait(max(0.0, due - time.monotonic()))
            self._wake.clear()
