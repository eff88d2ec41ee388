"""What every lbspeaker command shares: help that shows defaults, and one-line errors instead of tracebacks.

``HelpFormatter`` appends ``(default: X)`` to each option's help unless the help already speaks of its
default (flags and options without a default are left as they are). ``run_command`` runs a command and
turns the failures a user can cause or meet — no or a bad kubeconfig, an API server that cannot be
reached or that refuses a request, a file that cannot be read or a port that cannot be bound — into one
line on stderr naming the file or URL at fault, and exit status 1. Anything else is a bug and keeps its
traceback.

Importing this module costs only ``argparse``: the Kubernetes client is imported on the error path alone.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lbspeaker.kube.rest import ApiError

__all__ = ["CommandError", "HelpFormatter", "add_cluster_arguments", "api_error_line", "error_message",
           "listen_address", "log_level", "run_command"]

LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_LEVEL_HELP = "log level: debug, info, warning or error"


class CommandError(Exception):
    """A failure already said in one line (e.g. with the API server's URL, which only the command knows)."""


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` with each option's default, said once; options without help text show their default too."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 30,
                 width: int | None = None) -> None:
        super().__init__(prog, indent_increment, max_help_position, width)

    def _format_action(self, action: argparse.Action) -> str:
        if not action.help and action.option_strings and _shows_default(action):
            action = copy.copy(action)
            action.help = "(default: %(default)s)"
        return super()._format_action(action)

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "default" in text.lower() or not _shows_default(action):
            return text
        return super()._get_help_string(action)


def _shows_default(action: argparse.Action) -> bool:
    # None says nothing, and a flag's False/True is implied by the flag.
    return action.default is not None and action.default is not argparse.SUPPRESS \
        and not isinstance(action.default, bool)


def add_cluster_arguments(p: argparse.ArgumentParser, *, namespace_holds: str, lb_class_does: str) -> None:
    """The options every program that reads the cluster takes: --kubeconfig, --namespace, --config-name,
    --lb-class. ``namespace_holds`` says what lives in the namespace, ``lb_class_does`` what the class selects."""
    p.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, in-cluster, ~/.kube/config)")
    p.add_argument("--namespace", default=os.environ.get("LBSPEAKER_NAMESPACE", "lbspeaker-system"),
                   help=f"namespace of {namespace_holds} (default: $LBSPEAKER_NAMESPACE or lbspeaker-system)")
    p.add_argument("--config-name", default="config", help="name of the main configuration ConfigMap")
    p.add_argument("--lb-class", default=None,
                   help=f"{lb_class_does} Services with this spec.loadBalancerClass "
                        "(default: only Services without one)")


def listen_address(text: str) -> str:
    """argparse ``type=`` for a listen address: checked here (one line in the usage error), kept as text."""
    from lbspeaker.hostport import parse_listen

    try:
        parse_listen(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def log_level(text: str) -> str:
    """argparse ``type=`` for ``--log-level``: any case, one of ``LOG_LEVELS``."""
    level = text.strip().lower()
    if level not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(LOG_LEVELS)}")
    return level


def run_command(prog: str, command: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """``command(args)``; a failure the user can act on is printed as one line and gives exit status 1."""
    try:
        return command(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        message = error_message(exc)
        if message is None:
            raise
        print(f"{prog}: {message}", file=sys.stderr)
        return 1


def error_message(exc: BaseException) -> str | None:
    """One line for a failure a user can act on, or None for anything else (a bug)."""
    from lbspeaker.hostport import HostPortError

    if isinstance(exc, (CommandError, HostPortError)):
        return str(exc)
    if isinstance(exc, OSError) and not _from_kubernetes(exc):
        what = f"{exc.filename}: " if exc.filename else ""
        return f"{what}{exc.strerror or exc}"
    from lbspeaker.kube.client import KubeconfigError
    from lbspeaker.kube.rest import ApiError

    if isinstance(exc, KubeconfigError):
        return str(exc)
    if isinstance(exc, ApiError):
        return api_error_line(exc)
    return None


def api_error_line(exc: ApiError, server: str | None = None) -> str:
    """``cannot reach URL: Connection refused`` or ``URL refused GET /path: 403 Forbidden: why``."""
    url = server or _server_url(exc)
    where = f"the Kubernetes API server at {url}" if url else "the Kubernetes API server"
    request, detail = _split_request(exc.message)
    if exc.status == 0:
        return f"cannot reach {where}: {_root_cause(exc)}"
    return f"{where} refused {request}: {exc.status} {exc.reason}: {_first_line(detail)}"


def _from_kubernetes(exc: OSError) -> bool:
    # urllib3's connection errors are OSErrors too; they arrive wrapped in ApiError, never bare.
    return type(exc).__module__.startswith("urllib3")


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc``, its causes and urllib3's ``reason`` links, outermost first (bounded against cycles)."""
    out: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in out and len(out) < 20:
        out.append(cur)
        reason: Any = getattr(cur, "reason", None)
        cur = reason if isinstance(reason, BaseException) else (cur.__cause__ or cur.__context__)
    return out


def _server_url(exc: BaseException) -> str | None:
    for link in _chain(exc):
        # urllib3 2 without retries raises NewConnectionError, whose deprecated ``pool`` is its ``conn``.
        pool: Any = getattr(link, "conn", None) if "conn" in getattr(link, "__dict__", {}) else None
        pool = pool if pool is not None else link.__dict__.get("pool") if hasattr(link, "__dict__") else None
        if pool is not None and getattr(pool, "host", None):
            host = str(pool.host)
            host = f"[{host}]" if ":" in host else host
            # A pool has a scheme; a bare connection (urllib3 2 without retries) only its class says it.
            scheme = getattr(pool, "scheme", None) or ("https" if "HTTPS" in type(pool).__name__ else "http")
            return f"{scheme}://{host}:{pool.port}"
    return None


def _root_cause(exc: BaseException) -> str:
    """The innermost readable reason: 'Connection refused', 'timed out', a TLS or name resolution error."""
    chain = _chain(exc)
    for link in reversed(chain):
        if isinstance(link, OSError) and link.strerror:
            return link.strerror
    for link in reversed(chain):
        text = _first_line(str(link))
        if text:
            # urllib3 prefixes the connection object: "HTTPConnection(host=..., port=...): reason"
            return text.split("): ", 1)[-1]
    return "unknown error"


def _split_request(message: str) -> tuple[str, str]:
    """``"GET /api/v1/x: detail"`` (as ``lbspeaker.kube.rest`` words it) -> ("GET /api/v1/x", "detail")."""
    head, sep, detail = message.partition(": ")
    method, _, path = head.partition(" ")
    if sep and method.isupper() and path.startswith("/"):
        return head, detail
    return "a request", message


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""
