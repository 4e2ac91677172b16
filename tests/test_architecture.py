"""The shape of the code: no import circles among the project's own modules.

Imports inside functions count too (grimp reads every import statement), so a circle
cannot hide behind a late import. CHECKED names the packages held to it; extend it as
packages are cleaned up (config is the next one)."""

import grimp
import pytest

PROJECT = ("accounts", "audits", "chat", "config", "conversations")
CHECKED = ("chat", "conversations")


@pytest.fixture(scope="module")
def graph():
    return grimp.build_graph(*PROJECT, include_external_packages=False)


def import_cycles(graph, packages) -> list[list[str]]:
    """One shortest circle through each module of ``packages`` that sits on one."""
    cycles, seen = [], set()
    for package in packages:
        for module in sorted(graph.find_descendants(package) | {package}):
            for imported in sorted(graph.find_modules_directly_imported_by(module)):
                chain = graph.find_shortest_chain(importer=imported, imported=module)
                if chain and frozenset(chain) not in seen:
                    seen.add(frozenset(chain))
                    cycles.append([module, *chain])
    return cycles


def test_no_import_cycles_in_checked_packages(graph):
    cycles = import_cycles(graph, CHECKED)

    assert cycles == [], "import circles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_checker_sees_a_circle_when_there_is_one():
    # A circle made on a graph of its own: the checker must name it.
    graph = grimp.build_graph(*PROJECT, include_external_packages=False)
    graph.add_import(importer="chat.models", imported="chat.services.runs")

    cycles = import_cycles(graph, ["chat"])

    assert any(c[0] == "chat.models" and c[-1] == "chat.models" for c in cycles), cycles


def test_turn_services_are_not_imported_back_by_the_tools(graph):
    assert not graph.chain_exists(importer="chat.agent.tools", imported="chat.services.turns")
    assert not graph.chain_exists(importer="chat.services.runs", imported="chat.tasks")
