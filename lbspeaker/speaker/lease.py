"""The speaker Lease, in one place: its schema (name, labels, annotations) and the keeper of our own.

Schema: Lease ``speaker-<node>`` in the speaker namespace, label ``app.kubernetes.io/component=speaker``,
``holderIdentity`` the node name, and annotations peers judge us by: ``lbspeaker.io/heartbeat-addr``
(``host:port`` of our heartbeat socket), ``lbspeaker.io/subnets`` (subnets of our up interfaces) and
``lbspeaker.io/interfaces-up``. ``Link``/``parse_link``/``format_subnets`` read and write the latter two.

``LeaseKeeper`` holds Lease ``speaker-<node>`` in the speaker namespace: it creates it, renews it
every ``renew_every`` seconds with exactly one write (a PUT carrying the resourceVersion of our last
write; a conflict costs one GET and one retry), writes at once when the published annotations change
(heartbeat address, up-interface subnets: the data-path health peers judge us by), and deletes it on
graceful exit so peers drop us at once. API writes therefore grow with the number of nodes, never with
the number of IPs.

``lease_inputs`` turns a cached Lease object into the tracker's ``lease_update`` arguments; the speaker
calls it from the Lease cache (the cache is the truth, never a single watch event).
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from lbspeaker.kube.rest import ApiError, Rest, path_for
from lbspeaker.kube.timefmt import now_micro, parse_time

log = logging.getLogger(__name__)

LEASE_PREFIX = "speaker-"
LEASE_API = "coordination.k8s.io/v1"
COMPONENT_LABEL = "app.kubernetes.io/component"
COMPONENT = "speaker"


# Annotations each speaker writes on its own Lease so peers can judge its eligibility.
HEARTBEAT_ANNOTATION = "lbspeaker.io/heartbeat-addr"
SUBNETS_ANNOTATION = "lbspeaker.io/subnets"
INTERFACES_UP_ANNOTATION = "lbspeaker.io/interfaces-up"

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
    for part in str(annotations.get(SUBNETS_ANNOTATION) or "").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            subnets.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            continue
    up = str(annotations.get(INTERFACES_UP_ANNOTATION) or "").strip().lower() == "true"
    return Link(tuple(subnets), up or bool(subnets))


def lease_name(node: str) -> str:
    return f"{LEASE_PREFIX}{node}"


def node_of(lease: Mapping[str, Any]) -> str | None:
    """The node a speaker Lease belongs to, or None for other Leases in the namespace."""
    name = str((lease.get("metadata") or {}).get("name") or "")
    return name[len(LEASE_PREFIX):] if name.startswith(LEASE_PREFIX) and len(name) > len(LEASE_PREFIX) else None


@dataclass(frozen=True)
class LeaseInputs:
    holder: str | None
    renew_time: float | None
    duration: float
    heartbeat_addr: str | None


def lease_inputs(lease: Mapping[str, Any], heartbeat_annotation: str) -> LeaseInputs:
    """What the tracker needs from a Lease; malformed fields read as absent, never raise."""
    spec = lease.get("spec") or {}
    annotations = (lease.get("metadata") or {}).get("annotations") or {}
    try:
        duration = float(spec.get("leaseDurationSeconds") or 0)
    except (TypeError, ValueError):
        duration = 0.0
    holder = spec.get("holderIdentity")
    renew = spec.get("renewTime")
    return LeaseInputs(
        holder=str(holder) if holder else None,
        renew_time=parse_time(renew) if isinstance(renew, str) else None,
        duration=duration,
        heartbeat_addr=str(annotations.get(heartbeat_annotation) or "") or None,
    )


class LeaseKeeper:
    """Creates, renews and finally deletes our speaker Lease from a background thread."""

    def __init__(self, rest: Rest, namespace: str, node: str, *, annotations: Callable[[], Mapping[str, str]],
                 duration: int = 10, renew_every: float = 2.0) -> None:
        if not 0 < renew_every < duration:
            raise ValueError("need 0 < renew_every < duration")
        self.rest = rest
        self.namespace = namespace
        self.node = node
        self.name = lease_name(node)
        self.duration = duration
        self.renew_every = renew_every
        self._annotations = annotations
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._last: dict[str, Any] | None = None  # our last written Lease, for its resourceVersion
        self._written: dict[str, str] = {}
        self._thread: threading.Thread | None = None
        self.writes = 0
        self.failures = 0
        self.last_ok: bool = False

    @property
    def path(self) -> str:
        return path_for(LEASE_API, "leases", self.namespace, self.name)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="lease-keeper", daemon=True)
        self._thread.start()

    def poke(self) -> None:
        """Write now if the annotations changed (e.g. an interface went down), not at the next renewal."""
        self._wake.set()

    def stop(self, delete: bool = True) -> None:
        """Stop renewing; with ``delete``, remove the Lease so peers drop us at once."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if delete:
            try:
                self.rest.request("DELETE", self.path)
                log.info("deleted lease %s/%s", self.namespace, self.name)
            except ApiError as exc:
                if not exc.not_found:
                    log.warning("could not delete lease %s/%s: %s", self.namespace, self.name, exc)

    def renew(self) -> None:
        """One write (two on a conflict): create or renew the Lease with the current annotations."""
        with self._lock:
            annotations = dict(self._annotations())
            now = now_micro()
            body = self._body(annotations, now)
            try:
                self._last = self._write(body)
            except ApiError as exc:
                if not (exc.conflict or exc.not_found):
                    raise
                # Someone (a previous incarnation of us, a human) changed or deleted it: start afresh.
                self._last = None
                self._last = self._write(self._body(annotations, now))
            self._written = annotations
            self.writes += 1

    def _body(self, annotations: dict[str, str], now: str) -> dict[str, Any]:
        last = self._last
        meta: dict[str, Any] = {
            "name": self.name,
            "namespace": self.namespace,
            "labels": {COMPONENT_LABEL: COMPONENT},
            "annotations": annotations,
        }
        spec: dict[str, Any] = {
            "holderIdentity": self.node,
            "leaseDurationSeconds": self.duration,
            "renewTime": now,
            "acquireTime": ((last or {}).get("spec") or {}).get("acquireTime") or now,
        }
        if last is not None:
            meta["resourceVersion"] = (last.get("metadata") or {}).get("resourceVersion")
        return {"apiVersion": LEASE_API, "kind": "Lease", "metadata": meta, "spec": spec}

    def _write(self, body: dict[str, Any]) -> dict[str, Any]:
        if body["metadata"].get("resourceVersion"):
            return self.rest.request("PUT", self.path, body=body)
        try:
            current = self.rest.get(self.path)
        except ApiError as exc:
            if not exc.not_found:
                raise
            return self.rest.request("POST", path_for(LEASE_API, "leases", self.namespace), body=body)
        body["metadata"]["resourceVersion"] = (current.get("metadata") or {}).get("resourceVersion")
        body["spec"]["acquireTime"] = (current.get("spec") or {}).get("acquireTime") or body["spec"]["renewTime"]
        return self.rest.request("PUT", self.path, body=body)

    def _run(self) -> None:
        due = 0.0
        clock = time.monotonic
        while not self._stop.is_set():
            changed = dict(self._annotations()) != self._written
            if changed or clock() >= due:
                try:
                    self.renew()
                    self.last_ok = True
                    due = clock() + self.renew_every
                except ApiError as exc:
                    self.failures += 1
                    self.last_ok = False
                    log.warning("lease %s/%s not renewed: %s", self.namespace, self.name, exc)
                    # Retry sooner than a full period: the Lease must not lapse over one dropped request.
                    due = clock() + min(1.0, self.renew_every)
                except Exception:
                    self.failures += 1
                    self.last_ok = False
                    log.exception("lease %s/%s renewal failed", self.namespace, self.name)
                    due = clock() + self.renew_every
            self._wake.wait(max(0.0, due - clock()))
            self._wake.clear()
