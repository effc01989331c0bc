"""The example worker: every machine step of the examples, as the Python definitions use them.

    uv run wf worker run examples.worker:steps          # from the repository root; every tenant

``make dev`` runs it. The classes here are the very ones in ``*/definition.py``: one class is
both the blueprint (its ``step_type``, retry policy, timeout) and the implementation.
"""

from __future__ import annotations

from examples.document_review.steps import PublishDocument, ReviewDocument, ReviseDocument
from examples.expense_approval.steps import NotifyRejection, PayExpense, ValidateExpense
from examples.order_fulfilment.steps import ChargeCard, ConfirmDelivery, ReserveStock, ShipOrder

__all__ = ["steps"]

steps = [
    ValidateExpense,
    PayExpense,
    NotifyRejection,
    ReserveStock,
    ChargeCard,
    ShipOrder,
    ConfirmDelivery,
    ReviseDocument,
    ReviewDocument,
    PublishDocument,
]
