"""The speaker's Prometheus metrics (served by ``lbspeaker.metrics.MetricsServer``)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping

from prometheus_client import Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

ANNOUNCED = Gauge("lbspeaker_speaker_announced_ips", "IPs this node announces", ["protocol"])
LIVE_MEMBERS = Gauge("lbspeaker_speaker_live_members", "Speakers this node counts alive (itself included)")
RECONCILE_SECONDS = Histogram("lbspeaker_speaker_reconcile_duration_seconds",
                                      "Time to compute and apply what this node announces",
                                      buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1))


class SpeakerCollector(Collector):
    """Counters kept by the L2 responder and the heartbeater, read at scrape time.

    ``stats()`` returns ``{"l2": {...announcer stats...}, "heartbeat": {...heartbeater stats...}}``;
    either may be missing (no heartbeat key, announcer not started yet).
    """

    _L2 = (("requests_received", "ARP requests and neighbour solicitations received for announced IPs"),
           ("responses_sent", "ARP replies and neighbour advertisements sent"),
           ("gratuitous_sent", "Gratuitous ARPs and unsolicited neighbour advertisements sent"),
           ("duplicates_seen", "Frames from another MAC claiming an IP this node announces"),
           ("malformed_frames", "Malformed frames dropped by the responder"),
           ("reannouncements", "Announcements repeated because another MAC claimed an IP this node announces"))

    def __init__(self, stats: Callable[[], Mapping[str, Mapping[str, object]]]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        try:
            stats = self._stats()
        except Exception:
            log.exception("speaker stats failed")
            return
        l2 = stats.get("l2") or {}
        for name, doc in self._L2:
            value = l2.get(name)
            if isinstance(value, int):
                yield CounterMetricFamily(f"lbspeaker_speaker_{name}", doc, value=value)
        hb = stats.get("heartbeat") or {}
        for name in ("sent", "received"):
            value = hb.get(name)
            if isinstance(value, int):
                yield CounterMetricFamily(f"lbspeaker_speaker_heartbeats_{name}", f"Membership datagrams {name}",
                                          value=value)
        for name, doc in (("votes", "Votes this node cast against a silent neighbour"),
                          ("fences", "Times this node stopped answering because too few neighbours heard it"),
                          ("refutes", "Times this node answered a vote against it with a new state version")):
            value = hb.get(name)
            if isinstance(value, int):
                yield CounterMetricFamily(f"lbspeaker_speaker_membership_{name}", doc, value=value)
        for name, doc in (("neighbours", "Members this node exchanges datagrams with"),
                          ("members", "Layer2 members (eligible speakers with a Lease)")):
            value = hb.get(name)
            if isinstance(value, int):
                yield GaugeMetricFamily(f"lbspeaker_speaker_membership_{name}", doc, value=value)
        rejected = CounterMetricFamily("lbspeaker_speaker_heartbeats_rejected",
                                       "Heartbeats rejected, by reason", labels=["reason"])
        reasons = hb.get("rejected")
        if isinstance(reasons, Mapping):
            for reason, count in sorted(reasons.items()):
                rejected.add_metric([str(reason)], int(count))
        yield rejected
