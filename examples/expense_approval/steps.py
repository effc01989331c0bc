"""The machine steps of the expense approval (run by ``examples/worker.py``)."""

from __future__ import annotations

from workflow_core import BaseMachineStep, RetryPolicy, StepFailedError, WorkflowContext

__all__ = ["NotifyRejection", "PayExpense", "ValidateExpense"]

LIMIT = 10_000


class ValidateExpense(BaseMachineStep):
    """Refuses impossible amounts for good (no retry helps), tags the expense for the reviewer."""

    name = "validate"
    step_type = "expense.validate"
    description = "Check the amount and tag the expense"

    async def execute(self, context: WorkflowContext) -> None:
        amount = context.get("amount")
        if not isinstance(amount, int | float) or isinstance(amount, bool) or amount <= 0:
            raise StepFailedError(f"amount must be a positive number, got {amount!r}", type="InvalidAmount")
        if amount > LIMIT:
            raise StepFailedError(f"amount {amount} is above the limit of {LIMIT}", type="OverLimit")
        context.set("validated", True)
        context.set("band", "small" if amount < 100 else "large")


class PayExpense(BaseMachineStep):
    """Pays the expense; the job id is the payment's idempotency key (a redelivery pays once)."""

    name = "pay"
    step_type = "expense.pay"
    description = "Pay the approved expense"
    retry = RetryPolicy(max_attempts=5, backoff="exponential", initial_interval=1.0)

    async def execute(self, context: WorkflowContext) -> None:
        context.set("paid", True)
        context.set("payment_id", f"pay-{context.job_id}")


class NotifyRejection(BaseMachineStep):
    """Tells the submitter the expense was rejected."""

    name = "notify"
    step_type = "expense.notify"
    description = "Notify the submitter of the rejection"

    async def execute(self, context: WorkflowContext) -> None:
        context.set("notified", True)
        context.set("notice", f"Your expense was rejected: {context.get('comment') or 'no comment'}")
