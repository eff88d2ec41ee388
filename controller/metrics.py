"""The controller's Prometheus metrics (served by ``lbspeaker.metrics.MetricsServer``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

ADDRESSES_TOTAL = Gauge("lbspeaker_controller_addresses_total", "Addresses in a pool", ["pool", "family"])
ADDRESSES_IN_USE = Gauge("lbspeaker_controller_addresses_in_use", "Addresses of a pool held by Services",
                         ["pool", "family"])
ALLOCATIONS = Counter("lbspeaker_controller_allocations", "IP assignments written to Services", ["pool"])
ALLOCATION_FAILURES = Counter("lbspeaker_controller_allocation_failures",
                              "Services that could not get an IP, by reason", ["reason"])
CONFIG_LOADED = Gauge("lbspeaker_controller_config_loaded", "1 when a valid configuration is in force")
CONFIG_STALE = Gauge("lbspeaker_controller_config_stale",
                     "1 when the newest configuration is invalid and the last good one is still in force")
RECONCILE_SECONDS = Histogram("lbspeaker_controller_reconcile_duration_seconds",
                              "Time to reconcile one Service", buckets=(.0005, .001, .0025, .005, .01, .025, .05,
                                                                         .1, .25, .5, 1, 2.5))
STATUS_WRITES = Counter("lbspeaker_controller_status_writes", "Service status writes, by result", ["result"])
IS_LEADER = Gauge("lbspeaker_controller_leader", "1 while this replica holds the controller lease")
