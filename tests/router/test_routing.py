"""Pools: who may take a scenario's clients."""

from __future__ import annotations

import pickle

from router.routing import Manager, Pool
from router.schedule import Schedule, Window
from tests.router.plans import manager, plan, scenario

ANNA = manager(1, groups=frozenset({"senior"}), skills=frozenset({"english", "b2b"}))
BORIS = manager(2, groups=frozenset({"senior"}), skills=frozenset({"english"}))
VERA = manager(3, groups=frozenset({"junior"}))


def members(pool: Pool) -> list[str]:
    return [found.id for found in plan(ANNA, BORIS, VERA).pool(scenario(pool=pool))]


def test_no_names_is_everyone() -> None:
    assert members(Pool()) == ["m1", "m2", "m3"]


def test_managers_and_groups_add_up() -> None:
    assert members(Pool(groups=frozenset({"senior"}))) == ["m1", "m2"]
    assert members(Pool(managers=frozenset({"m3"}), groups=frozenset({"senior"}))) == ["m1", "m2", "m3"]
    assert members(Pool(managers=frozenset({"m3"}))) == ["m3"]


def test_every_required_skill_is_needed() -> None:
    assert members(Pool(skills=frozenset({"english"}))) == ["m1", "m2"]
    assert members(Pool(skills=frozenset({"english", "b2b"}))) == ["m1"]
    assert members(Pool(managers=frozenset({"m2", "m3"}), skills=frozenset({"english"}))) == ["m2"]


def test_pools_read_back_for_ops() -> None:
    assert Pool().describe() == "every manager"
    assert Pool(groups=frozenset({"senior", "a"}), skills=frozenset({"english"})).describe() == (
        "groups a, senior; skills english"
    )


def test_a_manager_comes_back_from_a_pickle_whole() -> None:
    shift = Schedule((Window(frozenset({0, 1}), 9 * 60, 18 * 60),))
    anna = Manager("anna", "Anna", "101", frozenset({"senior"}), frozenset({"en"}), 80, 5, shift)
    assert pickle.loads(pickle.dumps(anna)) == anna
