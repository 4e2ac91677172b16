"""The shape of the import graph (docs/architecture.md): no import circles in the project's
own modules, and the ground floor (``config/core``, ``config/api``) imports no app.

The graph is grimp's (the library behind import-linter): every ``import`` in the source,
including those inside functions and under ``TYPE_CHECKING``, so a circle cannot hide in a
function body. Circles are looked for among the project's own modules only.
"""

from functools import cache

import grimp

PROJECT_PACKAGES = ("config", "accounts", "audits", "conversations", "chat", "files")
APPS = ("accounts", "audits", "conversations", "chat", "files")

# Circles tolerated for now (none left). The check fails on any circle not listed, and on
# a listed one that is gone (so the list only shrinks).
KNOWN_CIRCLES: set[frozenset[str]] = set()
# Ground-floor modules that still import an app, the same way (only shrinks). config.api.auth
# loads the user model by import (package "live"): django.contrib.auth.get_user_model() would not.
KNOWN_APP_IMPORTS: dict[str, list[str]] = {"config.api.auth": ["accounts.models"]}


@cache
def _graph() -> grimp.ImportGraph:
    return grimp.build_graph(*PROJECT_PACKAGES, include_external_packages=True, cache_dir=None)


def import_circles(modules_under: tuple[str, ...] = PROJECT_PACKAGES, graph=None) -> set[frozenset[str]]:
    """Strongly connected components (Tarjan) of more than one module among the modules
    named ``modules_under`` or below: each is one circle (or several tangled ones)."""
    graph = graph or _graph()

    def ours(module: str) -> bool:
        return any(module == top or module.startswith(top + ".") for top in modules_under)

    nodes = sorted(m for m in graph.modules if ours(m))
    edges = {m: sorted(n for n in graph.find_modules_directly_imported_by(m) if ours(n)) for m in nodes}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: set[frozenset[str]] = set()

    def visit(start: str) -> None:
        # Iterative Tarjan: (node, iterator over its successors) frames, no recursion limit.
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        frames = [(start, iter(edges[start]))]
        while frames:
            node, successors = frames[-1]
            advanced = False
            for succ in successors:
                if succ not in index:
                    index[succ] = low[succ] = len(index)
                    stack.append(succ)
                    on_stack.add(succ)
                    frames.append((succ, iter(edges[succ])))
                    advanced = True
                    break
                if succ in on_stack:
                    low[node] = min(low[node], index[succ])
            if advanced:
                continue
            frames.pop()
            if frames:
                parent = frames[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    circles.add(frozenset(component))

    for node in nodes:
        if node not in index:
            visit(node)
    return circles


def _describe(circles) -> list[list[str]]:
    return sorted(sorted(circle) for circle in circles)


def test_config_has_no_import_circle():
    assert _describe(import_circles(("config",))) == []


def test_project_import_circles_are_only_the_known_ones():
    circles = import_circles()

    assert _describe(circles - KNOWN_CIRCLES) == [], "new import circle"
    assert _describe(KNOWN_CIRCLES - circles) == [], "circle broken: remove it from KNOWN_CIRCLES"


def test_ground_floor_imports_no_app():
    graph = _graph()
    ground = sorted(m for m in graph.modules if m.startswith(("config.api", "config.core")))

    offending = {
        module: sorted(n for n in graph.find_modules_directly_imported_by(module) if n.split(".")[0] in APPS)
        for module in ground
    }

    assert {module: apps for module, apps in offending.items() if apps} == KNOWN_APP_IMPORTS


def test_core_is_below_http():
    """config.core is what services need without HTTP: it imports neither the HTTP package
    nor a web framework."""
    graph = _graph()
    core = sorted(m for m in graph.modules if m == "config.core" or m.startswith("config.core."))
    http = ("config.api", "django", "rest_framework", "rest_framework_simplejwt", "channels", "daphne")

    offending = {
        module: sorted(n for n in graph.find_modules_directly_imported_by(module) if n.startswith(http))
        for module in core
    }

    assert len(core) >= 4
    assert {module: found for module, found in offending.items() if found} == {}


def test_the_checker_sees_a_circle_when_there_is_one():
    """A circle added on purpose (to a graph of its own) is found and named."""
    graph = grimp.build_graph(*PROJECT_PACKAGES, include_external_packages=False, cache_dir=None)
    graph.add_import(importer="chat.models", imported="chat.services.runs")

    circles = import_circles(("chat",), graph=graph)

    assert any("chat.models" in circle and "chat.services.runs" in circle for circle in circles), circles


def test_turn_services_are_not_imported_back_by_the_tools():
    graph = _graph()

    assert not graph.chain_exists(importer="chat.agent.tools", imported="chat.services.turns")
    assert not graph.chain_exists(importer="chat.services.runs", imported="chat.tasks")
