#!/usr/bin/env python3
"""Renders a Helm chart with Helm's own engine (the helm-python-sdk wheel, which
embeds Helm's Go SDK) and prints one YAML stream: the chart's CRDs, then its
rendered templates in path order, as `helm template --include-crds` would.

    render-chart.py CHART_DIR RELEASE NAMESPACE [VALUES_JSON]

scripts/setup.sh installs the engine into /var/cache/strata-test/helm-venv; run this
with that venv's python.
"""
import json
import sys

import helm_python as helm


def main() -> int:
    if len(sys.argv) not in (4, 5):
        print(__doc__, file=sys.stderr)
        return 2
    chart_dir, release, namespace = sys.argv[1:4]
    values = json.loads(sys.argv[4]) if len(sys.argv) == 5 else {}
    chart = helm.Chart.load(chart_dir)
    docs = [crd["data"] for crd in chart.crds]
    rendered = chart.render(values, name=release, namespace=namespace, is_install=True)
    for path in sorted(rendered):
        if path.endswith((".yaml", ".yml")) and rendered[path].strip():
            docs.append(rendered[path])
    print("\n---\n".join(d.strip().removeprefix("---").strip() for d in docs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
