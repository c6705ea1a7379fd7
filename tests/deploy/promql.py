"""Just enough PromQL reading to list the metric and label names an expression uses."""

from __future__ import annotations

import re

__all__ = ["grouping_labels", "matcher_labels", "metric_names"]

# Functions, aggregations and keywords of PromQL that can stand where a name does.
_WORDS = {
    "abs", "absent", "absent_over_time", "and", "avg", "avg_over_time", "bool", "bottomk",
    "by", "ceil", "changes", "clamp", "clamp_max", "clamp_min", "count", "count_over_time",
    "count_values", "delta", "deriv", "exp", "floor", "group", "group_left", "group_right",
    "histogram_quantile", "idelta", "ignoring", "increase", "irate", "label_join",
    "label_replace", "label_values", "last_over_time", "ln", "max", "max_over_time", "min",
    "min_over_time", "offset", "on", "or", "predict_linear", "quantile", "quantile_over_time",
    "rate", "resets", "round", "scalar", "sort", "sort_desc", "stddev", "stdvar", "sum",
    "sum_over_time", "time", "timestamp", "topk", "unless", "vector", "without",
}  # fmt: skip
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_MATCHERS = re.compile(r"\{([^}]*)\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)")
_LABEL_VALUES = re.compile(r"\blabel_values\(\s*([^,]*?)\s*,\s*(\w+)\s*\)")
_NAME = re.compile(r"(?<![\w.$])[A-Za-z_:][A-Za-z0-9_:]*")


def metric_names(expr: str) -> set[str]:
    """The metric names in a PromQL expression (or a Grafana label_values() query)."""
    text = _LABEL_VALUES.sub(r"\1", _STRING.sub('""', expr))
    text = _MATCHERS.sub("", text)
    text = _GROUPING.sub("", _RANGE.sub("", text))
    return {name for name in _NAME.findall(text) if name not in _WORDS}


def grouping_labels(expr: str) -> set[str]:
    """The labels named in by (...), without (...), on (...), ignoring (...) and label_values."""
    named = {
        label.strip()
        for group in _GROUPING.findall(expr)
        for label in group.split(",")
        if label.strip()
    }
    return named | {label for _, label in _LABEL_VALUES.findall(expr)}


def matcher_labels(expr: str) -> set[str]:
    """The labels matched in {...} selectors."""
    text = _STRING.sub('""', expr)
    return {
        matcher.split("=")[0].rstrip("!~").strip()
        for selector in _MATCHERS.findall(text)
        for matcher in selector.split(",")
        if matcher.strip()
    }
