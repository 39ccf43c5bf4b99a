#!/usr/bin/env python3
"""Renders and lints the Helm charts offline, with PyPI's helm-python-sdk (Helm's own Go code
behind a C ABI), because no `helm` binary can be installed on the machines CI runs on.

    charts/helm.py render CHART [-f VALUES.yaml ...] [--name N] [--namespace NS]
        prints a JSON list of the rendered objects, in template order (NOTES.txt excluded).
    charts/helm.py notes CHART [-f VALUES.yaml ...]
        prints the rendered NOTES.txt.
    charts/helm.py lint CHART [-f VALUES.yaml ...]
        runs `helm lint --strict`; prints its messages and exits 1 on any warning or error.

Values files are merged in order, as `helm -f a.yaml -f b.yaml` does. A values file that the
chart's values.schema.json refuses makes `render` exit 2 with Helm's message on stderr.
"""

import argparse
import json
import sys

import yaml
import helm_python as helm


def merged_values(files):
    values = {}
    for path in files:
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f) or {}
        deep_merge(values, doc)
    return values


def deep_merge(target, incoming):
    for key, value in incoming.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            deep_merge(target[key], value)
        else:
            target[key] = value


def render(args, notes=False):
    values = merged_values(args.values)
    try:
        with helm.Chart.load(args.chart) as chart:
            chart.validate_schema(values)
            rendered = chart.render(values, name=args.name, namespace=args.namespace,
                                    is_install=True, revision=1)
    except helm.HelmError as e:
        print(f"helm: {e}", file=sys.stderr)
        return 2
    if notes:
        for path, text in rendered.items():
            if path.endswith("NOTES.txt"):
                sys.stdout.write(text)
        return 0
    objects = []
    for path in sorted(rendered):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(rendered[path]):
            if doc:
                doc.setdefault("metadata", {})
                objects.append({"template": path, "object": doc})
    json.dump(objects, sys.stdout, indent=1)
    return 0


def lint(args):
    report = helm.lint(args.chart, merged_values(args.values), strict=True,
                       namespace=args.namespace)
    bad = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2]
    for m in report.get("messages", []):
        level = {1: "INFO", 2: "WARNING", 3: "ERROR"}.get(m.get("severity"), "UNKNOWN")
        print(f"[{level}] {m.get('path')}: {m.get('error')}")
    for e in report.get("errors", []) or []:
        print(f"[ERROR] {e}")
    print(f"{report.get('total_charts_linted', 0)} chart(s) linted, "
          f"{len(bad) + len(report.get('errors') or [])} problem(s)")
    return 1 if bad or report.get("errors") or report.get("total_charts_linted", 0) < 1 else 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["render", "notes", "lint"])
    parser.add_argument("chart")
    parser.add_argument("-f", "--values", action="append", default=[])
    parser.add_argument("--name", default="partita-operator")
    parser.add_argument("--namespace", default="partita-system")
    args = parser.parse_args()
    if args.command == "lint":
        return lint(args)
    return render(args, notes=args.command == "notes")


if __name__ == "__main__":
    sys.exit(main())
