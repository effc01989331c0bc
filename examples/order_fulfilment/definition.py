"""The order fulfilment as Python (its YAML twin is ``definition.yaml``)."""

from __future__ import annotations

from examples.order_fulfilment.steps import ChargeCard, ConfirmDelivery, ReserveStock, ShipOrder
from workflow_core import Edge, ParallelGateway, TimerStep, WorkflowDefinition

__all__ = ["definition"]

definition = WorkflowDefinition(
    name="order-fulfilment",
    version="1.0.0",
    description="Reserve stock and charge the card in parallel, ship when both are done, confirm later.",
    steps={
        "split": ParallelGateway(description="Reserve and charge at once"),
        "reserve_stock": ReserveStock,
        "charge_card": ChargeCard,
        "ship": ShipOrder,
        "delivery_window": TimerStep(description="Wait for the delivery", duration=1),
        "confirm": ConfirmDelivery,
    },
    edges=[
        Edge("split", "reserve_stock"),
        Edge("split", "charge_card"),
        Edge("reserve_stock", "ship"),
        Edge("charge_card", "ship"),
        Edge("ship", "delivery_window"),
        Edge("delivery_window", "confirm"),
    ],
)
