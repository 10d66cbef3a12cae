"""`python -m limner.training PART ...`: the same as `limner train PART ...`."""

from __future__ import annotations

import argparse
import sys

from limner.errors import LimnerError
from limner.training import trainers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m limner.training")
    sub = parser.add_subparsers(dest="trainer", metavar="PART", required=True)
    for name, trainer in trainers().items():
        p = sub.add_parser(name, help=trainer.help)
        trainer.add_arguments(p)
        p.set_defaults(handler=trainer.run)
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except LimnerError as err:
        print(f"limner: error: {err}", file=sys.stderr)
        return err.exit_code


if __name__ == "__main__":
    sys.exit(main())
