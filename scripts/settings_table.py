"""Write README's configuration table from the settings model (worker/settings.py).

    python scripts/settings_table.py          # rewrite the table in README.md
    python scripts/settings_table.py --check  # exit 1 when README's table differs

The model's descriptions are the one source: `b24-worker run --help` prints the
same names, defaults and meanings (tests/worker/test_settings_reference.py).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from worker.settings import reference_markdown

README = Path(__file__).resolve().parent.parent / "README.md"
TABLE = re.compile(r"^\| variable \| default \| meaning \|\n(?:\|.*\|\n)+", re.M)


def main(argv: list[str]) -> int:
    text = README.read_text()
    if len(TABLE.findall(text)) != 1:
        print("README.md: expected exactly one configuration table", file=sys.stderr)
        return 2
    written = TABLE.sub(lambda _: reference_markdown(), text)
    if "--check" in argv:
        if written != text:
            print(
                "README.md's configuration table differs from worker/settings.py: run "
                "python scripts/settings_table.py",
                file=sys.stderr,
            )
            return 1
        return 0
    README.write_text(written)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
