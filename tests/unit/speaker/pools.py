"""The pool configuration and subnets the speaker's unit tests share."""

from __future__ import annotations

import ipaddress

from lbspeaker.config.parse import parse_config

V4 = ipaddress.ip_network("192.0.2.0/24")
V6 = ipaddress.ip_network("2001:db8::/64")
CONFIG = parse_config("""
address-pools:
- name: l2
  protocol: layer2
  addresses: [192.0.2.200-192.0.2.250, 2001:db8::1000/120]
- name: far
  protocol: layer2
  addresses: [203.0.113.0/28]
- name: rack
  protocol: layer2
  addresses: [192.0.2.100-192.0.2.110]
  node-selectors:
  - match-labels: {rack: a}
- name: routed
  protocol: bgp
  addresses: [198.51.100.0/28]
""")
