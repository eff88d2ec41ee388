"""Write a minimal kubeconfig (one cluster, one user, one context, made current) for a server URL."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

CONTEXT_NAME = "lbspeaker-test"


def write_kubeconfig(
    path: str | os.PathLike[str], server_url: str, token: str | None = None, namespace: str = "default"
) -> Path:
    """Write a kubeconfig for ``server_url`` to ``path`` (mode 0600, since it may hold a token)."""
    user: dict[str, Any] = {"token": token} if token else {}
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": CONTEXT_NAME, "cluster": {"server": server_url}}],
        "users": [{"name": CONTEXT_NAME, "user": user}],
        "contexts": [
            {
                "name": CONTEXT_NAME,
                "context": {"cluster": CONTEXT_NAME, "user": CONTEXT_NAME, "namespace": namespace},
            }
        ],
        "current-context": CONTEXT_NAME,
        "preferences": {},
    }
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        yaml.safe_dump(config, fh, default_flow_style=False, sort_keys=False)
    return out
