"""Membership: which speakers are alive (per-node Lease + authenticated UDP heartbeats)."""
