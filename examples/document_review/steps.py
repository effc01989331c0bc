"""The machine steps of the document review (run by ``examples/worker.py``)."""

from __future__ import annotations

from workflow_core import BaseMachineStep, WorkflowContext

__all__ = ["PublishDocument", "ReviewDocument", "ReviseDocument"]


class ReviseDocument(BaseMachineStep):
    """Writes the next revision. The loop's bound: at most five revisions, then an incident."""

    name = "revise"
    step_type = "docs.revise"
    description = "Write the next revision"
    max_visits = 5

    async def execute(self, context: WorkflowContext) -> None:
        revision = int(context.get("revision", 0)) + 1
        context.set("revision", revision)
        context.set("text", f"{context.get('title', 'Untitled')} (revision {revision})")


class ReviewDocument(BaseMachineStep):
    """An automated reviewer: approves once the document has had ``required_revisions`` (default 2)."""

    name = "review"
    step_type = "docs.review"
    description = "Review the revision"

    async def execute(self, context: WorkflowContext) -> None:
        approved = int(context.get("revision", 0)) >= int(context.get("required_revisions", 2))
        context.set("approved", approved)


class PublishDocument(BaseMachineStep):
    """Publishes the approved document."""

    name = "publish"
    step_type = "docs.publish"
    description = "Publish the approved document"

    async def execute(self, context: WorkflowContext) -> None:
        context.set("published", True)
