"""Thin Kubernetes layer: client setup, list+watch caches, status writes, Events, Leases."""
