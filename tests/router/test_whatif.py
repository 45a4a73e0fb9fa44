"""What-if: stored leads replayed through another plan, with who was free when from the stored calls."""

from __future__ import annotations

from datetime import timedelta

from router.matching import Match, Patterns
from router.model import Call, Lead, LegResult, ManagerLeg
from router.routing import Manager, Pool, RoutingPlan
from router.whatif import PastLead, replay
from tests.router.plans import at, scenario

ANNA, BORIS = Manager("anna", "Anna", "101"), Manager("boris", "Boris", "102")
NEW = RoutingPlan(
    managers=(ANNA, BORIS),
    scenarios=(
        scenario(
            "vip", match=Match(payload=(("tags", Patterns.of(["vip"])),)), pool=Pool(managers=frozenset({"anna"}))
        ),
        scenario("default"),
    ),
)


def past(lead_id: int, start: float, talked: tuple[str, float, float] | None, vip: bool = False) -> PastLead:
    """A lead whose one call started at ``start``; ``talked``: (manager, answered, hung up) seconds."""
    lead = Lead(phone=f"+7916000000{lead_id}", name="", source="site", external_id=None,
                payload={"tags": ["vip"]} if vip else {}, created_at=at(start), id=lead_id)  # fmt: skip
    call = Call(lead_id=lead_id, attempt=1, scenario="default", channel_id=f"lr-{lead_id}", phone=lead.phone,
                started_at=at(start), id=lead_id)  # fmt: skip
    if talked is not None:
        manager, answered, ended = talked
        call.answered_at, call.bridged_at, call.ended_at = at(answered), at(answered) + timedelta(seconds=3), at(ended)
        call.manager_id = manager
        call.legs.append(ManagerLeg(manager, at(answered), at(answered + 3), at(ended), LegResult.ANSWERED))
    return PastLead(lead, [call])


def test_each_lead_gets_the_new_scenario_and_whoever_of_its_pool_was_free_then() -> None:
    history = [
        past(1, 0, ("boris", 5, 60), vip=True),  # vip now goes to Anna alone, who was free
        past(2, 10, ("anna", 15, 50)),  # Boris was busy with lead 1: Anna again
        past(3, 20, ("boris", 25, 40), vip=True),  # Anna was busy with lead 2: nobody in the vip pool
        past(4, 30, None),  # never reached: nobody's either way
    ]
    result = replay(history, NEW)
    assert result.per_scenario() == {"default": (4, 2), "vip": (0, 2)}
    assert result.per_manager() == {"anna": (1, 2), "boris": (2, 0)}
    assert [(lead.lead_id, lead.owner_now, lead.owner_new) for lead in result.changed_hands()] == [
        (1, "boris", "anna"),
        (3, "boris", None),
    ]
