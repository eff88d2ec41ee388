"""The `lbspeaker` command: `controller`, `speaker`, `config check FILE` and `status`.

Only the chosen command's module is imported, so that `lbspeaker --help` and `config check` start fast
and each long-running program loads only its own code: the speaker process never imports the
controller (nor its Prometheus series), and the controller never imports the speaker. Every
subcommand's ``--help`` shows the defaults (``cmdline.HelpFormatter``); failures a user can act on end
in one line on stderr and exit status 1 (``cmdline.run_command``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from lbspeaker import __version__
from lbspeaker.cmdline import HelpFormatter, add_cluster_arguments, run_command

Run = Callable[[argparse.Namespace], int]


@dataclass(frozen=True)
class Command:
    name: str
    summary: str
    description: str
    build: Callable[[argparse.ArgumentParser], Run]  # adds the arguments (importing what they need), returns run


def _controller(p: argparse.ArgumentParser) -> Run:
    from controller.main import add_arguments, run

    add_arguments(p)
    return run


def _speaker(p: argparse.ArgumentParser) -> Run:
    from lbspeaker.speaker.main import add_arguments, run

    add_arguments(p)
    return run


def _config(p: argparse.ArgumentParser) -> Run:
    sub = p.add_subparsers(dest="config_command", required=True, metavar="COMMAND")
    check_parser = sub.add_parser(
        "check", formatter_class=HelpFormatter, help="check pool configuration files before applying them",
        description="Check pool ConfigMap manifests (or bare config YAML) as the cluster would read them, "
                    "and summarise the pools. Exit status 0 when valid, 1 otherwise.")
    from lbspeaker.config import check

    check.add_arguments(check_parser)
    return check.run


def _status(p: argparse.ArgumentParser) -> Run:
    add_cluster_arguments(p, namespace_holds="the configuration ConfigMaps and the speaker Leases",
                          lb_class_does="show")

    def run(args: argparse.Namespace) -> int:
        from lbspeaker.status import run as status_run

        return status_run(args)

    return run


COMMANDS = (
    Command("controller", "assign external IPs to LoadBalancer Services",
            "Assign external IPs from the address pools to LoadBalancer Services and write them to their status.",
            _controller),
    Command("speaker", "announce external IPs from this node (layer 2 / BGP)",
            "Announce the external IPs in Service statuses from this node: ARP/NDP answers for layer 2 pools, "
            "BGP routes for bgp pools.", _speaker),
    Command("config", "configuration tools (config check)", "Configuration tools.", _config),
    Command("status", "pools, Services, and which node announces each IP",
            "Read the cluster and print: each pool with its used and total addresses per family; each "
            "LoadBalancer Service with its external IPs and pool; and for each IP the node(s) announcing it, "
            "as the speakers report it in their nodeAssigned Events (with how long ago), or why nobody "
            "announces it (no ready endpoint, no eligible node, node missing, no speaker on the subnet).",
            _status),
)


def build_parser(chosen: str | None) -> tuple[argparse.ArgumentParser, dict[str, Run]]:
    """The parser; only the ``chosen`` command gets its arguments (and imports its module)."""
    parser = argparse.ArgumentParser(prog="lbspeaker", formatter_class=HelpFormatter,
                                     description="LoadBalancer Services for bare-metal Kubernetes.")
    parser.add_argument("--version", action="version", version=f"lbspeaker {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", title="commands")
    runs: dict[str, Run] = {}
    for cmd in COMMANDS:
        p = sub.add_parser(cmd.name, help=cmd.summary, description=cmd.description, formatter_class=HelpFormatter)
        if cmd.name == chosen:
            runs[cmd.name] = cmd.build(p)
    return parser, runs


def chosen_command(argv: Sequence[str]) -> str | None:
    """The subcommand named in ``argv``: the first word that is not an option (top-level options take no value)."""
    return next((a for a in argv if not a.startswith("-")), None)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, runs = build_parser(chosen_command(argv))
    args = parser.parse_args(argv)
    prog = f"lbspeaker {args.command}" + (f" {args.config_command}" if args.command == "config" else "")
    return run_command(prog, runs[args.command], args)


if __name__ == "__main__":
    sys.exit(main())
