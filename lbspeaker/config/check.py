"""``lbspeaker config check FILE``: validate a pool configuration file before applying it.

Prints the summary and exits 0 when valid; prints every error, one per line on stderr, and exits 1 when
the file is invalid or cannot be read.
"""

from __future__ import annotations

import argparse
import sys

from lbspeaker.config.errors import ConfigError
from lbspeaker.config.load import load_file
from lbspeaker.config.summary import summarize

PROG = "lbspeaker config check"


def main(argv: list[str]) -> int:
    """``argv``: the arguments after ``config check``."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Check a pool ConfigMap manifest (or bare config YAML) and summarise it.",
    )
    parser.add_argument("file", metavar="FILE", help="ConfigMap manifest (may hold several) or bare config YAML")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help and usage errors; a caller wants a return code
        return int(exc.code or 0)
    try:
        cfg = load_file(args.file)
    except ConfigError as exc:
        for line in exc.errors:
            print(line, file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"{PROG}: cannot read {args.file}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(summarize(cfg))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
