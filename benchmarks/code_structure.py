"""Lines per layer and the longest functions of the project, as measured for the restructuring issue.

    python benchmarks/code_structure.py [--top 10] [--json OUT]

A layer is a top-level package (``pipelines``, ``serving``) or a sub-package / flat module of
``journey_model``; lines are physical lines of ``.py`` files (blank and comment lines included), functions are
measured from their ``def`` to their last line (methods included, nested functions counted on their own).
"""

from __future__ import annotations

import argparse
import ast
import json
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("journey_model", "pipelines", "serving")


def layer_of(path: Path) -> str:
    parts = path.relative_to(ROOT).parts
    if parts[0] != "journey_model" or len(parts) == 2:
        return parts[0] if parts[0] != "journey_model" else f"journey_model/{parts[1]}"
    return f"journey_model/{parts[1]}/"


def measure(top: int) -> dict:
    lines: Counter[str] = Counter()
    modules: Counter[str] = Counter()
    functions = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            text = path.read_text()
            layer = layer_of(path)
            lines[layer] += text.count("\n")
            modules[layer] += 1
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    functions.append((node.end_lineno - node.lineno + 1, f"{path.relative_to(ROOT)}:{node.name}"))
    functions.sort(reverse=True)
    return {
        "lines_per_layer": dict(sorted(lines.items())),
        "modules_per_layer": dict(sorted(modules.items())),
        "total_lines": sum(lines.values()),
        "longest_functions": [{"lines": n, "function": name} for n, name in functions[:top]],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--top", type=int, default=10, help="longest functions listed (default: %(default)s)")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    result = measure(args.top)
    for layer, count in result["lines_per_layer"].items():
        print(f"{layer:<36} {count:>6} lines in {result['modules_per_layer'][layer]:>3} modules")
    print(f"{'total':<36} {result['total_lines']:>6}")
    print("longest functions:")
    for item in result["longest_functions"]:
        print(f"  {item['lines']:>4}  {item['function']}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
