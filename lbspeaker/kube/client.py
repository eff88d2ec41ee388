"""Building a Kubernetes API client: an explicit kubeconfig, $KUBECONFIG, in-cluster, or ~/.kube/config."""

from __future__ import annotations

import logging
import os

from kubernetes import client, config
from kubernetes.config.config_exception import ConfigException

log = logging.getLogger(__name__)


def load_api_client(kubeconfig: str | None = None, *, pool_size: int = 16) -> client.ApiClient:
    """Return an ApiClient for the first source that works, in the order kubectl uses.

    ``pool_size`` sets urllib3's connection pool so that several workers and watches can hold
    connections at once without reconnecting. The official client's own retries are switched off
    (urllib3 would retry every failed call 3 times, silently multiplying timeouts; ``Rest`` decides
    what is retried) and TCP keepalive is on, as client-go has it, so that a dead peer behind an idle
    pooled connection or watch is noticed by the kernel.
    """
    cfg = client.Configuration()
    path = kubeconfig or os.environ.get("KUBECONFIG")
    if path:
        config.load_kube_config(config_file=path.split(os.pathsep)[0], client_configuration=cfg)
        source = path
    else:
        try:
            config.load_incluster_config(client_configuration=cfg)
            source = "in-cluster service account"
        except ConfigException:
            default = os.path.expanduser("~/.kube/config")
            if not os.path.exists(default):
                raise ConfigException(
                    "no Kubernetes configuration: pass --kubeconfig, set KUBECONFIG, run in a pod, "
                    "or create ~/.kube/config"
                ) from None
            config.load_kube_config(config_file=default, client_configuration=cfg)
            source = default
    cfg.connection_pool_maxsize = pool_size
    cfg.retries = False
    cfg.client_go_retries = False
    cfg.keep_alive = True
    log.info("Kubernetes API at %s (config from %s)", cfg.host, source)
    return client.ApiClient(configuration=cfg)
