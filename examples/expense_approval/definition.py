"""The expense approval as Python: the same classes are the blueprint and (in the worker) the code.

Its YAML twin is ``definition.yaml``; both produce the same wire form (a test checks it).
"""

from __future__ import annotations

from examples.expense_approval.steps import NotifyRejection, PayExpense, ValidateExpense
from workflow_core import BaseHumanStep, Edge, ExclusiveGateway, WorkflowDefinition

__all__ = ["ReviewExpense", "definition"]


class ReviewExpense(BaseHumanStep):
    """A person in finance approves or rejects the expense."""

    name = "review"
    title = "Review expense"
    description = "Approve or reject the expense"
    candidate_groups = ("finance",)
    due_in = 24 * 3600
    form_schema = {
        "type": "object",
        "properties": {
            "approved": {"type": "boolean", "title": "Approve"},
            "comment": {"type": "string", "title": "Comment"},
        },
        "required": ["approved"],
    }


definition = WorkflowDefinition(
    name="expense-approval",
    version="1.0.0",
    description="Validate an expense, have finance review it, then pay it or tell the submitter.",
    steps={
        "validate": ValidateExpense,
        "review": ReviewExpense,
        "decide": ExclusiveGateway(description="Approved?"),
        "pay": PayExpense,
        "notify": NotifyRejection,
    },
    edges=[
        Edge("validate", "review"),
        Edge("review", "decide"),
        Edge("decide", "pay", condition="approved == true"),
        Edge("decide", "notify", default=True),
    ],
)
