"""The document review as Python (its YAML twin is ``definition.yaml``): a bounded loop."""

from __future__ import annotations

from examples.document_review.steps import PublishDocument, ReviewDocument, ReviseDocument
from workflow_core import Edge, ExclusiveGateway, WorkflowDefinition

__all__ = ["definition"]

definition = WorkflowDefinition(
    name="document-review",
    version="1.0.0",
    description="Revise and review a document until it is approved (five revisions at most).",
    steps={
        "revise": ReviseDocument,
        "review": ReviewDocument,
        "decide": ExclusiveGateway(description="Approved?"),
        "publish": PublishDocument,
    },
    edges=[
        Edge("revise", "review"),
        Edge("review", "decide"),
        Edge("decide", "publish", condition="approved == true"),
        Edge("decide", "revise", default=True),
    ],
    start=["revise"],
)
