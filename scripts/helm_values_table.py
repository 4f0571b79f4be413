#!/usr/bin/env python3
"""The values table of helm/videoqa/README.md, generated from the `# --` comments of values.yaml (helm-docs'
convention: the comment line right above a key describes it, and a described mapping covers its children).

    scripts/helm_values_table.py           exit 1 (and say so) when README.md's table is not the generated one
    scripts/helm_values_table.py --write   rewrite the table in README.md
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import yaml

CHART = Path(__file__).resolve().parent.parent / "helm" / "videoqa"
START, END = "<!-- values-table:start -->", "<!-- values-table:end -->"
_KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_.-]+):(?:\s|$)")


def described_keys(text: str) -> dict[str, str]:
    """Dotted key path -> description, for every key with a `# --` comment right above it."""
    out: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    pending: str | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("# --"):
            pending = stripped[4:].strip()
            continue
        m = _KEY.match(line)
        if not m:
            if stripped and not stripped.startswith("#") and not stripped.startswith("-"):
                pending = None
            continue
        indent = len(m["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = ".".join([k for _, k in stack] + [m["key"]])
        stack.append((indent, m["key"]))
        if pending is not None:
            out[path] = pending
            pending = None
    return out


def leaves(node: object, prefix: str = "") -> list[str]:
    """Dotted paths of every value that is not a non-empty mapping."""
    if isinstance(node, dict) and node:
        return [p for k, v in node.items() for p in leaves(v, f"{prefix}.{k}" if prefix else str(k))]
    return [prefix]


def undescribed(values_text: str) -> list[str]:
    """Leaves covered by no `# --` comment (neither on themselves nor on a parent mapping)."""
    described = described_keys(values_text)
    return [
        leaf
        for leaf in leaves(yaml.safe_load(values_text))
        if not any(leaf == d or leaf.startswith(d + ".") for d in described)
    ]


def table(values_text: str) -> str:
    values = yaml.safe_load(values_text)
    rows = ["| key | default | description |", "|---|---|---|"]
    for path, text in described_keys(values_text).items():
        node = values
        for part in path.split("."):
            node = node[part]
        default = json.dumps(node, separators=(", ", ": ")).replace("|", r"\|")
        description = text.replace("|", r"\|")
        rows.append(f"| `{path}` | `{default}` | {description} |")
    return "\n".join(rows)


def readme_with_table(readme: str, values_text: str) -> str:
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{table(values_text)}\n{END}{tail}"


def main() -> int:
    values_text = (CHART / "values.yaml").read_text()
    readme_path = CHART / "README.md"
    readme = readme_path.read_text()
    missing = undescribed(values_text)
    if missing:
        print(f"values.yaml: no `# --` comment covers {', '.join(missing)}", file=sys.stderr)
        return 1
    wanted = readme_with_table(readme, values_text)
    if "--write" in sys.argv[1:]:
        readme_path.write_text(wanted)
        return 0
    if wanted != readme:
        print(f"{readme_path}: the values table is stale; run {sys.argv[0]} --write", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
