"""Write deploy/kubernetes/monitoring/prometheusrule.yaml from deploy/prometheus/alerts.yaml.

    python scripts/prometheus_rule.py          # write it
    python scripts/prometheus_rule.py --check  # exit 1 when it differs

The plain rule file is the one source; the PrometheusRule carries its groups
unchanged (tests/deploy/test_monitoring.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy" / "prometheus" / "alerts.yaml"
TARGET = ROOT / "deploy" / "kubernetes" / "monitoring" / "prometheusrule.yaml"

HEADER = """\
# Written by scripts/prometheus_rule.py from deploy/prometheus/alerts.yaml: change
# that file and run the script, not this one.
"""


def rendered() -> str:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    rule = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "b24-worker", "labels": {"app.kubernetes.io/name": "b24-worker"}},
        "spec": {"groups": groups},
    }
    return HEADER + yaml.safe_dump(rule, sort_keys=False, width=100, allow_unicode=True)


def main(argv: list[str]) -> int:
    text = rendered()
    if "--check" in argv:
        if not TARGET.exists() or TARGET.read_text() != text:
            print(f"{TARGET} differs from {RULES}: run python {__file__}", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
