"""The plan: the measures as a dependency graph, checked to be a DAG.

``plan()`` is pure: measures in, a :class:`Plan` out, or a :class:`GraphError` naming every
duplicate id, unknown input and cycle with its line.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass

from vaultd.errors import GraphError, Problem, did_you_mean
from vaultd.note.measures import RESERVED_INPUTS, Measure


@dataclass(frozen=True)
class Plan:
    """Measures in declared order, with what each waits for and what waits for it."""

    measures: tuple[Measure, ...]
    depends_on: dict[str, tuple[str, ...]]  # measure id -> measure ids it reads (no reserved)
    dependents: dict[str, tuple[str, ...]]


_INPUT_HINT = "an input is another measure's id, `answer` or `query`"


def plan(measures: Iterable[Measure], unreadable: Collection[str] = ()) -> Plan:
    """Check the measures form a DAG and return the plan to run them.

    ``unreadable`` names measures the note declares but that could not be read (their own
    problems are reported): an input naming one is not unknown, but there is no plan.
    """
    measures = tuple(measures)
    problems: list[Problem] = []
    first: dict[str, Measure] = {}
    for measure in measures:
        if measure.id in first:
            problems.append(
                Problem(
                    measure.line,
                    f"duplicate id `{measure.id}` (first used on line {first[measure.id].line})",
                    "rename one of them",
                )
            )
        else:
            first[measure.id] = measure
    unique = tuple(first.values())
    depends_on: dict[str, tuple[str, ...]] = {}
    for measure in unique:
        deps: list[str] = []
        for name in measure.input:
            if name in RESERVED_INPUTS:
                continue
            if name == measure.id:
                problems.append(Problem(measure.line, f"measure `{name}` uses itself as input",
                                        _INPUT_HINT))
            elif name in unreadable and name not in first:
                continue
            elif name not in first:
                known = [*first, *RESERVED_INPUTS, *unreadable]
                problems.append(
                    Problem(measure.line, f"measure `{measure.id}`: unknown input `{name}`",
                            did_you_mean(name, known) or _INPUT_HINT)
                )
            elif name not in deps:
                deps.append(name)
        depends_on[measure.id] = tuple(deps)
    for cycle in _cycles(unique, depends_on):
        path = " → ".join([*cycle, cycle[0]])
        problems.append(Problem(first[cycle[0]].line, f"the measures form a cycle: {path}",
                                "one of them must not take the next as its input"))
    if problems or unreadable:
        raise GraphError(problems)
    dependents: dict[str, list[str]] = {m.id: [] for m in unique}
    for measure in unique:  # in declared order, so each list is too
        for name in depends_on[measure.id]:
            dependents[name].append(measure.id)
    return Plan(
        measures=unique,
        depends_on=depends_on,
        dependents={name: tuple(ids) for name, ids in dependents.items()},
    )


def _cycles(
    measures: tuple[Measure, ...], depends_on: dict[str, tuple[str, ...]]
) -> list[list[str]]:
    """Each cycle once, as the ids along it, found by depth-first search."""
    state: dict[str, int] = {}  # 1: on the path, 2: finished
    cycles: list[list[str]] = []
    for measure in measures:
        if measure.id in state:
            continue
        path: list[str] = [measure.id]
        pending: list[list[str]] = [list(depends_on.get(measure.id, ()))]
        state[measure.id] = 1
        while path:  # iterative, so a long chain of measures cannot exhaust the stack
            if not pending[-1]:
                state[path.pop()] = 2
                pending.pop()
                continue
            dep = pending[-1].pop(0)
            if state.get(dep) == 1:
                cycles.append(path[path.index(dep) :])
            elif dep not in state:
                state[dep] = 1
                path.append(dep)
                pending.append(list(depends_on.get(dep, ())))
    return cycles
