"""benchmarks/run_all.py runs every script it discovers with no arguments but its quick flag: a script that
needs arguments (a helper such as screen.py) must not be discovered, or `make bench` fails on it."""

import ast

from conftest import benchmark_module


def required_arguments(script) -> list[str]:
    """The argparse arguments ``script`` cannot run without: positionals without a default count, and
    options with ``required=True``."""
    needed = []
    for node in ast.walk(ast.parse(script.read_text(encoding="utf-8"))):
        if not (isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument" and node.args):
            continue
        name = node.args[0].value if isinstance(node.args[0], ast.Constant) else "?"
        keywords = {k.arg: k.value for k in node.keywords}
        optional_count = isinstance(keywords.get("nargs"), ast.Constant) and keywords["nargs"].value in ("?", "*")
        required = keywords.get("required")
        if (not str(name).startswith("-") and not optional_count and "default" not in keywords) or (
                isinstance(required, ast.Constant) and required.value is True):
            needed.append(str(name))
    return needed


def test_discovered_benchmarks_run_without_arguments():
    run_all = benchmark_module("run_all")
    needy = {script.name: required_arguments(script) for script in run_all.discover()}
    assert not {name: args for name, args in needy.items() if args}
    helpers = {name: required_arguments(run_all.HERE / name) for name in ("screen.py", "neighbour_views.py")}
    assert all(helpers.values()), helpers  # the check sees what they need
