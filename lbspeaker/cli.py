"""The `lbspeaker` command: `controller`, `speaker`, `config check FILE` and `status`."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="lbspeaker", description="LoadBalancer Services for bare-metal Kubernetes.")
    sub = parser.add_subparsers(dest="command", required=True)

    from controller.main import add_arguments as controller_args

    controller_args(sub.add_parser("controller", help="assign external IPs to LoadBalancer Services"))
    from lbspeaker.speaker.main import add_arguments as speaker_args

    speaker_args(sub.add_parser("speaker", help="announce external IPs from this node (layer 2 / BGP)"))
    cfg = sub.add_parser("config", help="configuration tools")
    cfg_sub = cfg.add_subparsers(dest="config_command", required=True)
    from lbspeaker.config.check import add_arguments as check_args

    check_args(cfg_sub.add_parser("check", help="validate pool ConfigMap manifests or bare config YAML, merged"))
    status = sub.add_parser("status", help="pools with used/total and LoadBalancer Services with their IPs")
    status.add_argument("--kubeconfig")
    status.add_argument("--namespace", default="lbspeaker-system")
    status.add_argument("--config-name", default="config")
    status.add_argument("--lb-class", default=None)

    args = parser.parse_args(argv)
    if args.command == "controller":
        from controller.main import run

        return run(args)
    if args.command == "speaker":
        from lbspeaker.speaker.main import run as speaker_run

        return speaker_run(args)
    if args.command == "config":
        from lbspeaker.config.check import run as check_run

        return check_run(args)
    if args.command == "status":
        from lbspeaker.status import run as status_run

        return status_run(args)
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
