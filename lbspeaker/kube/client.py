"""Building a Kubernetes API client: an explicit kubeconfig, $KUBECONFIG, in-cluster, or ~/.kube/config.

Every way this can fail (no configuration anywhere, a file that does not exist or cannot be read, a
file the Kubernetes client cannot use) raises ``KubeconfigError`` with one line naming the file, so
commands can print it as it is.
"""

from __future__ import annotations

import logging
import os

from kubernetes import client, config
from kubernetes.config.config_exception import ConfigException

log = logging.getLogger(__name__)

DEFAULT_KUBECONFIG = "~/.kube/config"


class KubeconfigError(Exception):
    """No usable Kubernetes configuration; the message names the file (or the sources tried)."""


def load_api_client(kubeconfig: str | None = None, *, pool_size: int = 16) -> client.ApiClient:
    """Return an ApiClient for the first source that works, in the order kubectl uses.

    ``pool_size`` sets urllib3's connection pool so that several workers and watches can hold
    connections at once without reconnecting. The official client's own retries are switched off
    (urllib3 would retry every failed call 3 times, silently multiplying timeouts; ``Rest`` decides
    what is retried) and TCP keepalive is on, as client-go has it, so that a dead peer behind an idle
    pooled connection or watch is noticed by the kernel.
    """
    cfg = client.Configuration()
    env = os.environ.get("KUBECONFIG")
    if kubeconfig:
        source = _load_file(kubeconfig, kubeconfig, cfg)
    elif env:
        first = env.split(os.pathsep)[0]
        source = _load_file(first, f"{first} (from $KUBECONFIG)", cfg)
    else:
        try:
            config.load_incluster_config(client_configuration=cfg)
            source = "in-cluster service account"
        except ConfigException:
            default = os.path.expanduser(DEFAULT_KUBECONFIG)
            if not os.path.exists(default):
                raise KubeconfigError(
                    f"no Kubernetes configuration: not running in a pod, $KUBECONFIG is not set and {default} "
                    "does not exist; pass --kubeconfig PATH"
                ) from None
            source = _load_file(default, default, cfg)
    cfg.connection_pool_maxsize = pool_size
    cfg.retries = False
    cfg.client_go_retries = False
    cfg.keep_alive = True
    log.info("Kubernetes API at %s (config from %s)", cfg.host, source)
    return client.ApiClient(configuration=cfg)


def _load_file(path: str, named: str, cfg: client.Configuration) -> str:
    """Load kubeconfig ``path`` into ``cfg``; ``named`` is how messages name it."""
    if not os.path.exists(path):
        raise KubeconfigError(f"kubeconfig {named}: the file does not exist")
    if not os.path.isfile(path):
        raise KubeconfigError(f"kubeconfig {named}: not a file")
    try:
        config.load_kube_config(config_file=path, client_configuration=cfg)
    except OSError as exc:
        raise KubeconfigError(f"kubeconfig {named}: {exc.strerror or exc}") from exc
    except Exception as exc:  # ConfigException, a YAML error, a malformed entry: the file is not usable
        text = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        raise KubeconfigError(f"kubeconfig {named}: {text[:300] or type(exc).__name__}") from exc
    return path
