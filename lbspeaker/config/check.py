"""``lbspeaker config check FILE...``: validate pool configuration files before applying them.

Files are ConfigMap manifests (several documents allowed) or bare config YAML; ``-`` reads standard
input. Several files are merged as the cluster would merge them (``load.load_inputs``), so
``config check deploy/examples/*.yaml`` checks the whole configuration at once, and a ConfigMap the
cluster would ignore (another namespace, another name without the label) is named with the reason.

Output: the summary (or with ``--show`` the normalised YAML, passwords redacted) on stdout; warnings
and every error, one per line, on stderr. Exit 0 when valid, 1 when any error or unreadable file,
2 on usage errors. Never a traceback for any input: bounded reads, bounded parsing.
"""

from __future__ import annotations

import argparse
import sys

from lbspeaker.config.cluster import CONFIG_NAME, NAMESPACE
from lbspeaker.config.errors import ConfigError
from lbspeaker.config.load import Loaded, load_inputs, read_text
from lbspeaker.config.render import config_yaml
from lbspeaker.config.summary import summarize

PROG = "lbspeaker config check"
STDIN = "-"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``lbspeaker config check``."""
    parser.add_argument(
        "files",
        metavar="FILE",
        nargs="+",
        help="ConfigMap manifest (may hold several documents) or bare config YAML; '-' reads standard input",
    )
    parser.add_argument(
        "--show",
        action="store_true",
        help="print the parsed configuration as normalised YAML (defaults filled in, passwords redacted) "
        "instead of the summary",
    )
    parser.add_argument(
        "--namespace",
        default=NAMESPACE,
        help="namespace the controller and the speakers read ConfigMaps from (default: %(default)s)",
    )
    parser.add_argument(
        "--config-name",
        default=CONFIG_NAME,
        help="name of the main ConfigMap; others need the label lbspeaker.io/config (default: %(default)s)",
    )


def _read(files: list[str]) -> tuple[list[tuple[str, str]], list[str]]:
    inputs: list[tuple[str, str]] = []
    errors: list[str] = []
    for path in files:
        name = "<stdin>" if path == STDIN else path
        try:
            if path == STDIN:
                inputs.append((name, read_text(sys.stdin.buffer, name)))
            else:
                with open(path, "rb") as f:
                    inputs.append((name, read_text(f, name)))
        except ConfigError as exc:
            errors.extend(exc.errors)
        except OSError as exc:
            errors.append(f"{PROG}: cannot read {path}: {exc.strerror or exc}")
    return inputs, errors


def _sources(loaded: Loaded) -> str:
    parts = [p.source if p.source == p.file else f"{p.source} ({p.file})" for p in loaded.parts]
    return f"merged ({len(parts)}): {', '.join(parts)}"


def run(args: argparse.Namespace) -> int:
    """Check ``args.files``; print the outcome; 0 when valid, 1 otherwise."""
    inputs, errors = _read(list(args.files))
    loaded = load_inputs(inputs, args.namespace, args.config_name)
    for warning in loaded.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for line in errors + loaded.errors:
        print(line, file=sys.stderr)
    if errors or loaded.errors or loaded.config is None:
        return 1
    if args.show:
        sys.stdout.write(config_yaml(loaded.config))
    else:
        if len(loaded.parts) > 1:
            print(_sources(loaded))
        print(summarize(loaded.config))
    return 0


def main(argv: list[str]) -> int:
    """``argv``: the arguments after ``config check``."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Check pool ConfigMap manifests (or bare config YAML) as the cluster would merge them, "
        "and summarise the result.",
    )
    add_arguments(parser)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help and usage errors; a caller wants a return code
        return int(exc.code or 0)
    return run(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
