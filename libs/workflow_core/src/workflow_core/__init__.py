"""workflow_core: the domain of the workflow suite, with no I/O.

Steps are classes (class attributes define them; the same class is blueprint and implementation),
a :class:`WorkflowDefinition` joins them with :class:`Edge` objects and travels as a JSON wire
format, the pure engine (:class:`WorkflowMachine`) turns ``(state, event)`` into
``(state, commands)``, and :class:`LocalEngine` runs it in-process.
"""

from workflow_core.context import WorkflowContext
from workflow_core.definition import Edge, WorkflowDefinition, load_definition
from workflow_core.engine import Transition, WorkflowMachine
from workflow_core.errors import (
    DefinitionInvalidError,
    EngineError,
    InstanceNotActiveError,
    InstanceNotFoundError,
    NoIncidentError,
    TaskDataInvalidError,
    UnknownTaskError,
    ValidationIssue,
    VersionError,
    WorkflowCoreError,
)
from workflow_core.local import LocalEngine, LocalTask
from workflow_core.models import InstanceState, InstanceStatus, StepKind, StepStatus
from workflow_core.protocols import EventBus, ExecutionEngine, InstanceStore, Workflow
from workflow_core.steps import (
    BaseHumanStep,
    BaseMachineStep,
    BaseStep,
    ConditionalGroup,
    Escalation,
    ExclusiveGateway,
    InclusiveGateway,
    ParallelGateway,
    ParallelGroup,
    RetryableStepError,
    RetryPolicy,
    SequentialGroup,
    Step,
    StepFailedError,
    TimerStep,
    WaitForSignalStep,
)
from workflow_core.version import Version

__all__ = [
    "BaseHumanStep",
    "BaseMachineStep",
    "BaseStep",
    "ConditionalGroup",
    "DefinitionInvalidError",
    "Edge",
    "EngineError",
    "Escalation",
    "EventBus",
    "ExclusiveGateway",
    "ExecutionEngine",
    "InclusiveGateway",
    "InstanceNotActiveError",
    "InstanceNotFoundError",
    "InstanceState",
    "InstanceStatus",
    "InstanceStore",
    "LocalEngine",
    "LocalTask",
    "NoIncidentError",
    "ParallelGateway",
    "ParallelGroup",
    "RetryPolicy",
    "RetryableStepError",
    "SequentialGroup",
    "Step",
    "StepFailedError",
    "StepKind",
    "StepStatus",
    "TaskDataInvalidError",
    "TimerStep",
    "Transition",
    "UnknownTaskError",
    "ValidationIssue",
    "Version",
    "VersionError",
    "WaitForSignalStep",
    "Workflow",
    "WorkflowContext",
    "WorkflowCoreError",
    "WorkflowDefinition",
    "WorkflowMachine",
    "load_definition",
]
