"""What a kubelet would ask of the container runtime, for one container of a deploy/ manifest, as podman flags.

The image tests run the image the way deploy/speaker.yaml and deploy/controller.yaml say, so the flags
come from the manifests themselves, as deploy/kustomization.yaml renders them: a changed
securityContext, env or volume changes the test run too.
Only the fields the manifests use are translated; anything else raises ``Unsupported`` instead of
being dropped, so a manifest can never ask for more than the test gives it.

Translated (kubelet + containerd + runc behaviour in brackets):
- securityContext of pod and container (the container's wins): runAsUser/runAsGroup [the process's
  uid/gid], runAsNonRoot [refuses uid 0], readOnlyRootFilesystem [a read-only root, no tmpfs added],
  allowPrivilegeEscalation: false [no_new_privs], capabilities drop ALL + add [exactly those],
  seccompProfile RuntimeDefault [the runtime's default filter];
- hostNetwork [the node's network namespace] or the pod's own namespace;
- env with values or fieldRefs (metadata.name, metadata.namespace, spec.nodeName, status.podIP,
  status.hostIP), plus KUBERNETES_SERVICE_HOST/PORT [the kubelet's service env];
- emptyDir volumes, medium Memory with a sizeLimit [a tmpfs], and the service account token volume
  [token, ca.crt, namespace at /var/run/secrets/kubernetes.io/serviceaccount, read-only];
- resources.limits [the memory and CPU cgroup limits]; terminationGracePeriodSeconds [SIGTERM, then
  SIGKILL after the grace]; args [appended to the image's entrypoint].
Pure: reads manifest dicts, returns lists of strings; costs nothing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tests.unit.deploy.test_manifests import one, render

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
CAPABILITIES = {"NET_RAW": 13, "NET_ADMIN": 12}  # bit numbers, for reading /proc/PID/status


class Unsupported(ValueError):
    """A manifest field this translation does not give the container."""


@dataclass(frozen=True)
class PodContext:
    """What the kubelet knows and the manifest does not: where the pod runs and how it reaches the API."""

    pod_name: str
    namespace: str
    node_name: str
    node_netns: str  # the node's network namespace (/run/netns/NAME), which hostNetwork pods share
    host_ip: str
    pod_netns: str | None  # the pod's own namespace, for pods without hostNetwork
    pod_ip: str | None
    service_account_dir: str  # holds token, ca.crt and namespace
    api_host: str
    api_port: int


@dataclass(frozen=True)
class Probe:
    kind: str  # "liveness" or "readiness"
    path: str
    port: int


def deployed(kind: str, name: str) -> dict[str, Any]:
    """The Deployment or DaemonSet ``name`` as ``kubectl apply -k deploy/`` creates it (namespace and
    image from deploy/kustomization.yaml applied)."""
    return one(render(), kind, name)


def pod_spec(workload: Mapping[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def only_container(spec: Mapping[str, Any]) -> dict[str, Any]:
    containers = spec.get("containers") or []
    if len(containers) != 1 or spec.get("initContainers"):
        raise Unsupported("pods with one container and no init containers only")
    container: dict[str, Any] = containers[0]
    return container


def _security(spec: Mapping[str, Any], container: Mapping[str, Any]) -> dict[str, Any]:
    pod = dict(spec.get("securityContext") or {})
    own = dict(container.get("securityContext") or {})
    for key in ("fsGroup", "supplementalGroups", "sysctls", "fsGroupChangePolicy"):
        if key in pod:
            raise Unsupported(f"pod securityContext.{key}")
    merged = {k: v for k, v in pod.items() if k in ("runAsUser", "runAsGroup", "runAsNonRoot", "seccompProfile")}
    merged.update(own)
    return merged


def _field_ref(path: str, spec: Mapping[str, Any], ctx: PodContext) -> str:
    pod_ip = ctx.host_ip if spec.get("hostNetwork") else (ctx.pod_ip or "")
    values = {"metadata.name": ctx.pod_name, "metadata.namespace": ctx.namespace, "spec.nodeName": ctx.node_name,
              "status.podIP": pod_ip, "status.hostIP": ctx.host_ip}
    if path not in values:
        raise Unsupported(f"env fieldRef {path}")
    return values[path]


def _env(spec: Mapping[str, Any], container: Mapping[str, Any], ctx: PodContext) -> list[str]:
    out = [f"KUBERNETES_SERVICE_HOST={ctx.api_host}", f"KUBERNETES_SERVICE_PORT={ctx.api_port}"]
    for item in container.get("env") or []:
        if "value" in item:
            value = str(item["value"])
        else:
            ref = (item.get("valueFrom") or {}).get("fieldRef")
            if not ref:
                raise Unsupported(f"env {item.get('name')}: only values and fieldRefs")
            value = _field_ref(ref["fieldPath"], spec, ctx)
        out.append(f"{item['name']}={value}")
    if container.get("envFrom"):
        raise Unsupported("envFrom")
    return out


_QUANTITY = re.compile(r"^(\d+)(Ki|Mi|Gi)?$")


def _bytes(quantity: str) -> int:
    match = _QUANTITY.match(str(quantity))
    if not match:
        raise Unsupported(f"quantity {quantity!r}")
    return int(match.group(1)) * {None: 1, "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30}[match.group(2)]


def _cpus(quantity: str) -> str:
    text = str(quantity)
    return str(int(text[:-1]) / 1000) if text.endswith("m") else text


def _mounts(spec: Mapping[str, Any], container: Mapping[str, Any], ctx: PodContext) -> list[str]:
    volumes = {v["name"]: v for v in spec.get("volumes") or []}
    out: list[str] = []
    for mount in container.get("volumeMounts") or []:
        volume = volumes.get(mount["name"])
        if volume is None or set(volume) != {"name", "emptyDir"}:
            raise Unsupported(f"volume {mount['name']}: emptyDir only")
        empty = volume["emptyDir"] or {}
        if empty.get("medium") != "Memory":
            raise Unsupported(f"volume {mount['name']}: emptyDir with medium Memory only")
        size = f",tmpfs-size={_bytes(empty['sizeLimit'])}" if "sizeLimit" in empty else ""
        # emptyDir directories are world-writable (0777), like a fresh tmpfs with mode 1777.
        out += ["--mount", f"type=tmpfs,destination={mount['mountPath']},tmpfs-mode=1777{size}"]
    if spec.get("automountServiceAccountToken", True):
        out += ["--volume", f"{ctx.service_account_dir}:{SERVICE_ACCOUNT_DIR}:ro"]
    return out


def podman_run_args(workload: Mapping[str, Any], image: str, name: str, ctx: PodContext) -> list[str]:
    """``podman run`` arguments (after ``run``) that start the workload's container like a kubelet would."""
    spec = pod_spec(workload)
    container = only_container(spec)
    sec = _security(spec, container)
    if spec.get("hostNetwork"):
        netns = ctx.node_netns
    elif ctx.pod_netns is None:
        raise Unsupported("a pod without hostNetwork needs a namespace of its own (PodContext.pod_netns)")
    else:
        netns = ctx.pod_netns
    args = ["--detach", "--name", name, "--pull", "never", "--network", f"ns:{netns}"]
    uid, gid = sec.get("runAsUser"), sec.get("runAsGroup")
    if uid is None:
        raise Unsupported("securityContext.runAsUser must be set (the image's USER is not read here)")
    if sec.get("runAsNonRoot") and int(uid) == 0:
        raise Unsupported("runAsNonRoot with runAsUser 0: the kubelet refuses to start this container")
    args += ["--user", f"{int(uid)}:{int(gid if gid is not None else uid)}"]
    if sec.get("readOnlyRootFilesystem"):
        # podman's --read-only adds tmpfs on /tmp, /run and /var/tmp by default; Kubernetes adds none.
        args += ["--read-only", "--read-only-tmpfs=false"]
    if sec.get("allowPrivilegeEscalation") is False:
        args += ["--security-opt", "no-new-privileges"]
    caps = sec.get("capabilities") or {}
    if [c.upper() for c in caps.get("drop") or []] != ["ALL"]:
        raise Unsupported("capabilities must drop ALL (the runtime's default set is not modelled)")
    args += ["--cap-drop", "all"]
    for cap in caps.get("add") or []:
        args += ["--cap-add", str(cap).upper()]
    seccomp = (sec.get("seccompProfile") or {}).get("type", "RuntimeDefault")
    if seccomp == "Unconfined":
        args += ["--security-opt", "seccomp=unconfined"]
    elif seccomp != "RuntimeDefault":
        raise Unsupported(f"seccompProfile {seccomp}")
    for key in ("privileged", "procMount", "seLinuxOptions", "appArmorProfile"):
        if key in sec:
            raise Unsupported(f"securityContext.{key}")
    for env in _env(spec, container, ctx):
        args += ["--env", env]
    args += _mounts(spec, container, ctx)
    limits = (container.get("resources") or {}).get("limits") or {}
    if "memory" in limits:
        args += ["--memory", str(_bytes(limits["memory"]))]
    if "cpu" in limits:
        args += ["--cpus", _cpus(limits["cpu"])]
    args += ["--stop-timeout", str(int(spec.get("terminationGracePeriodSeconds", 30)))]
    if container.get("command"):
        raise Unsupported("command (the image's entrypoint is what the manifests use)")
    args.append(image)
    args += [str(a) for a in container.get("args") or []]
    return args


def probes(workload: Mapping[str, Any]) -> list[Probe]:
    """The container's HTTP probes with named ports resolved to numbers."""
    container = only_container(pod_spec(workload))
    ports = {p["name"]: int(p["containerPort"]) for p in container.get("ports") or [] if "name" in p}
    out: list[Probe] = []
    for kind in ("liveness", "readiness"):
        probe = container.get(f"{kind}Probe")
        if probe is None:
            continue
        get = probe.get("httpGet")
        if get is None:
            raise Unsupported(f"{kind}Probe: httpGet only")
        port = get["port"]
        out.append(Probe(kind, get.get("path", "/"), ports[port] if isinstance(port, str) else int(port)))
    return out


def capability_mask(names: Sequence[str]) -> int:
    mask = 0
    for name in names:
        mask |= 1 << CAPABILITIES[name.upper()]
    return mask
