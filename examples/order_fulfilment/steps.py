"""The machine steps of the order fulfilment (run by ``examples/worker.py``)."""

from __future__ import annotations

from workflow_core import BaseMachineStep, RetryableStepError, RetryPolicy, WorkflowContext

__all__ = ["ChargeCard", "ConfirmDelivery", "ReserveStock", "ShipOrder"]


class ReserveStock(BaseMachineStep):
    """Reserves the ordered items."""

    name = "reserve_stock"
    step_type = "orders.reserve_stock"
    description = "Reserve the items in the warehouse"

    async def execute(self, context: WorkflowContext) -> None:
        items = context.get("items") or []
        context.set("reserved", len(items))
        context.set("reservation_id", f"res-{context.job_id}")


class ChargeCard(BaseMachineStep):
    """Charges the card. The payment gateway times out on the first attempt, to show a retry."""

    name = "charge_card"
    step_type = "orders.charge_card"
    description = "Charge the customer's card"
    retry = RetryPolicy(max_attempts=3, backoff="fixed", initial_interval=0.5)
    timeout = 30

    async def execute(self, context: WorkflowContext) -> None:
        if context.attempt == 1:
            raise RetryableStepError("payment gateway timed out", type="GatewayTimeout")
        context.set("charged", context.get("total", 0))
        context.set("charge_id", f"ch-{context.job_id}")  # the job id is the idempotency key


class ShipOrder(BaseMachineStep):
    """Ships once the stock is reserved and the card charged (the join)."""

    name = "ship"
    step_type = "orders.ship"
    description = "Hand the parcel to the carrier"

    async def execute(self, context: WorkflowContext) -> None:
        context.set("shipped", True)
        context.set("tracking", f"TRK-{str(context.job_id)[:8].upper()}")


class ConfirmDelivery(BaseMachineStep):
    """Closes the order after the delivery window."""

    name = "confirm"
    step_type = "orders.confirm"
    description = "Confirm the delivery"

    async def execute(self, context: WorkflowContext) -> None:
        context.set("delivered", True)
