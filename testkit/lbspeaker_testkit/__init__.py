"""Test support: a faithful Kubernetes API test server and network-namespace lab helpers."""
