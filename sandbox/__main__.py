"""``python -m sandbox``: run the sandbox portal in the foreground."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from sandbox.cli import add_arguments, run


def main(argv: Sequence[str] | None = None, *, prog: str = "python -m sandbox") -> int:
    parser = argparse.ArgumentParser(
        prog=prog, description="Serve a local Bitrix24 portal (limits, batch, errors)."
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
