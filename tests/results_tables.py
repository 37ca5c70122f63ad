"""The figures the tests check, read from trained/results.json, and the markdown tables the pages show them in.

tests/test_trained.py checks the figures (against the runs' logs, and against what model_comparison.compare
computes) and that every page a table names in "shown_in" holds that very table. A page's tables are found by
their cells, wherever they stand, so rewording or retitling a page cannot break a test; changing a figure means
changing it in trained/results.json first. `python tests/results_tables.py` prints every table as markdown, with
the pages that show it, ready to paste.
"""

import json
import os
import re

REPO_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO_DIR, "trained", "results.json")
_RULE = re.compile(r"^:?-+:?$")
_NUMBER = re.compile(r"^[-+−0-9.,%…e ]*$")


def load(path: str = RESULTS) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def all_tables(results: dict) -> list[dict]:
    """Every table of the data file: the committed runs, the logged tables, the interval tables."""
    return [results["committed_runs"], *results["logged"], *results["intervals"]]


def markdown(table: dict) -> str:
    """The table as the pages show it: its "code" columns in backticks, numbers right-aligned."""
    cols, rows = table["columns"], table["rows"]
    code = {cols.index(c) for c in table.get("code", [])}
    rule = ["---" if j == 0 or not all(_NUMBER.match(r[j]) for r in rows) else "---:" for j in range(len(cols))]
    shown = [[f"`{c}`" if j in code and c else c for j, c in enumerate(r)] for r in rows]
    return "\n".join("| " + " | ".join(r) + " |" for r in [cols, rule, *shown])


def page_tables(path: str) -> list[list[list[str]]]:
    """Every markdown table of a page, wherever it stands: a list of rows of cells (the header first, the rule
    left out, backticks around a cell dropped)."""
    tables, current = [], []
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    for line in lines + [""]:
        if line.startswith("|"):
            cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
            if not all(_RULE.match(c) for c in cells):
                current.append(cells)
        elif current:
            tables.append(current)
            current = []
    return tables


if __name__ == "__main__":
    for t in all_tables(load()):
        print(f"<!-- {t.get('name', 'the committed runs')}: shown in {', '.join(t['shown_in'])} -->")
        print(markdown(t) + "\n")
