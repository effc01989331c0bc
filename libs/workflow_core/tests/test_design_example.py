"""The example of DESIGN.md §3, working exactly as shown, on LocalEngine."""

from __future__ import annotations

from workflow_core import (
    BaseHumanStep,
    BaseMachineStep,
    Edge,
    InstanceStatus,
    LocalEngine,
    WorkflowContext,
    WorkflowDefinition,
)


async def charge(amount: float) -> bool:
    return amount > 0


class ChargeCard(BaseMachineStep):
    name = "charge_card"

    async def execute(self, context: WorkflowContext) -> None:
        context.set("charged", await charge(context.get("amount")))


class ReviewException(BaseHumanStep):
    name = "review_exception"
    title = "Review Failed Processing"
    form_schema = {
        "type": "object",
        "properties": {"approved": {"type": "boolean"}},
        "required": ["approved"],
    }


class Validate(BaseMachineStep):
    name = "validate"

    async def execute(self, context: WorkflowContext) -> None:
        context.set("valid", True)


class Notify(BaseMachineStep):
    name = "notify"

    async def execute(self, context: WorkflowContext) -> None:
        context.set("notified", True)


def order_definition() -> WorkflowDefinition:
    return WorkflowDefinition(
        name="order",
        version="1.0.0",
        description="...",
        steps={"a": Validate, "b": ChargeCard, "c": Notify, "d": ReviewException},
        edges=[Edge("a", "b"), Edge("b", "c"), Edge("b", "d", condition="amount > 100")],
    )


async def test_the_design_example_runs_to_completion() -> None:
    engine = LocalEngine()
    instance = await engine.start(order_definition(), input={"amount": 250})
    await engine.run_until_idle()
    assert engine.get(instance.id).status is InstanceStatus.WAITING
    assert engine.get(instance.id).data == {"amount": 250, "valid": True, "charged": True, "notified": True}
    task = engine.open_tasks(instance.id)[0]
    assert task.title == "Review Failed Processing"
    await engine.complete_task(task.id, data={"approved": True}, user="user-1")
    await engine.run_until_idle()
    final = engine.get(instance.id)
    assert final.status is InstanceStatus.COMPLETED
    assert final.data["approved"] is True
    assert engine.open_tasks(instance.id) == []


async def test_the_condition_is_evaluated_for_real() -> None:
    engine = LocalEngine()
    instance = await engine.start(order_definition(), input={"amount": 50})
    await engine.run_until_idle()
    state = engine.get(instance.id)
    assert state.status is InstanceStatus.COMPLETED
    assert "approved" not in state.data
    assert engine.open_tasks() == []


def test_edges_may_name_step_classes() -> None:
    definition = WorkflowDefinition(
        name="order",
        version="1.0.0",
        steps={"a": Validate, "b": ChargeCard},
        edges=[Edge(Validate, ChargeCard)],
    )
    assert definition.to_wire()["edges"] == [{"source": "a", "target": "b"}]
    assert definition.to_wire()["steps"]["b"] == {
        "type": "machine",
        "step_type": "charge_card",
        "name": "charge_card",
    }
