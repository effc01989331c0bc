"""``wf definitions``, ``wf instances`` and ``wf tasks``: the client SDK from a shell.

Service URLs and the token come from the root options or the environment (``WF_REGISTRY_URL``,
``WF_ORCHESTRATOR_URL``, ``WF_INBOX_URL``, ``WF_TOKEN``). Read commands take ``--json`` to print the
service's raw JSON; exit codes are listed in :mod:`wf_cli.output`.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from wf_cli.output import (
    EXIT_ERROR,
    EXIT_USAGE,
    err,
    fail,
    out,
    parse_json_argument,
    print_json,
    service_errors,
)
from wf_client import END_STATUSES, SyncWorkflowClient

if TYPE_CHECKING:
    from workflow_core.definition import WorkflowDefinition

__all__ = ["Connection", "definitions", "instances", "tasks"]

definitions = typer.Typer(
    help="Register and inspect definitions (definition-registry).", no_args_is_help=True
)
instances = typer.Typer(help="Start, observe and steer instances (orchestrator).", no_args_is_help=True)
tasks = typer.Typer(help="List, claim and complete human tasks (task-inbox).", no_args_is_help=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print the raw JSON response.")]


@dataclass(frozen=True)
class Connection:
    """The root options: where the services are and the token to send."""

    registry_url: str | None
    orchestrator_url: str | None
    inbox_url: str | None
    token: str | None

    def client(self) -> SyncWorkflowClient:
        """A client for one command."""
        return SyncWorkflowClient(
            registry_url=self.registry_url,
            orchestrator_url=self.orchestrator_url,
            inbox_url=self.inbox_url,
            token=self.token,
        )


def _items(value: Any, /) -> list[dict[str, Any]]:
    """The objects of a JSON list (anything else: none)."""
    if not isinstance(value, list):
        return []
    return [item for item in value if isinstance(item, dict)]  # pyright: ignore[reportUnknownVariableType]


def _client(ctx: typer.Context) -> SyncWorkflowClient:
    connection = ctx.find_root().obj
    if not isinstance(connection, Connection):  # pragma: no cover - the root callback always sets it
        connection = Connection(None, None, None, None)
    return connection.client()


# ---------------------------------------------------------------------------------- definitions


def _python_definition(path: Path) -> WorkflowDefinition:
    """The ``definition`` attribute of a Python file (its directory's parents stay importable)."""
    from workflow_core.definition import WorkflowDefinition

    root = str(Path.cwd())
    if root not in sys.path:
        sys.path.insert(0, root)
    spec = importlib.util.spec_from_file_location(f"_wf_definition_{abs(hash(path))}", path)
    if spec is None or spec.loader is None:
        fail(f"{path}: not a Python module", code=EXIT_USAGE)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        fail(f"{path}: {type(exc).__name__}: {exc}", code=EXIT_ERROR)
    value = getattr(module, "definition", None)
    if not isinstance(value, WorkflowDefinition):
        fail(f"{path}: has no WorkflowDefinition named 'definition'", code=EXIT_USAGE)
    return value


@definitions.command("register")
def register(
    ctx: typer.Context,
    files: Annotated[
        list[Path], typer.Argument(help="YAML, JSON or Python (a `definition` attribute) files.")
    ],
    json_output: JsonFlag = False,
) -> None:
    """Register definition versions (registering the same content again changes nothing)."""
    registered: list[Any] = []
    with _client(ctx) as client, service_errors():
        for path in files:
            if not path.is_file():
                fail(f"{path}: no such file", code=EXIT_USAGE)
            source: Any = _python_definition(path) if path.suffix == ".py" else path
            body = client.register(source)
            registered.append(body)
            if not json_output:
                out.print(f"registered {body.get('name')} {body.get('version')} ({body.get('digest', '')})")
    if json_output:
        print_json(registered if len(registered) != 1 else registered[0])


@definitions.command("list")
def list_definitions(ctx: typer.Context, json_output: JsonFlag = False) -> None:
    """The latest version of each definition."""
    with _client(ctx) as client, service_errors():
        body = client.list_definitions()
    if json_output:
        print_json(body)
        return
    items = _items(body.get("items") if isinstance(body, dict) else body)  # pyright: ignore[reportUnknownMemberType]
    table = Table("name", "version", "description", box=None)
    for item in items:
        table.add_row(str(item.get("name")), str(item.get("version")), str(item.get("description") or ""))
    out.print(table)


@definitions.command("show")
def show_definition(
    ctx: typer.Context,
    name: str,
    version: Annotated[str | None, typer.Option(help="A version (the latest by default).")] = None,
    json_output: JsonFlag = False,
) -> None:
    """One definition version with its wire form."""
    with _client(ctx) as client, service_errors():
        body = client.get_definition(name, version=version)
    if json_output:
        print_json(body)
        return
    import yaml

    out.print(f"[bold]{body.get('name')}[/] {body.get('version')}  {body.get('digest', '')}", markup=True)
    document = body.get("definition") or body.get("wire") or body
    out.print(yaml.safe_dump(document, sort_keys=False, allow_unicode=True).rstrip(), markup=False)


@definitions.command("graph")
def graph(
    ctx: typer.Context,
    name: str,
    version: Annotated[str | None, typer.Option(help="A version (the latest by default).")] = None,
    format: Annotated[str, typer.Option(help="mermaid or json.")] = "mermaid",
) -> None:
    """The definition's graph (Mermaid text, or JSON)."""
    if format not in {"mermaid", "json"}:
        fail("--format must be mermaid or json", code=EXIT_USAGE)
    with _client(ctx) as client, service_errors():
        if version is None:
            version = str(client.get_definition(name)["version"])
        body = client.definition_graph(name, version, format=format)
    if format == "json" or not isinstance(body, dict | str):
        print_json(body)
    elif isinstance(body, dict):
        sys.stdout.write(str(body.get("mermaid") or body.get("graph") or body) + "\n")  # pyright: ignore[reportUnknownArgumentType,reportUnknownMemberType]
    else:
        sys.stdout.write(body + "\n")


# ---------------------------------------------------------------------------------- instances


def _status_style(status: str) -> str:
    return {
        "completed": "green",
        "failed": "red",
        "cancelled": "yellow",
        "waiting": "cyan",
        "running": "blue",
    }.get(status, "white")


def _print_instance(body: dict[str, Any]) -> None:
    status = str(body.get("status"))
    out.print(
        f"[bold]{body.get('id')}[/]  {body.get('definition')} {body.get('version')}  "
        f"[{_status_style(status)}]{status}[/]",
        markup=True,
    )
    if body.get("business_key"):
        out.print(f"business key: {body['business_key']}", markup=False)
    for step in _items(body.get("active_steps")):
        extra = f" task {step['task_id']}" if step.get("task_id") else ""
        extra += f" attempt {step['attempt']}" if step.get("attempt") else ""
        out.print(
            f"  active: {step.get('step')} ({step.get('kind')}, {step.get('status')}){extra}", markup=False
        )
    for incident in _items(body.get("incidents")):
        out.print(f"  [red]incident:[/] {incident.get('step')}: {incident.get('message')}", markup=True)
    out.print_json(data=body.get("data") or {})


@instances.command("start")
def start(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Definition name.")],
    input: Annotated[
        str | None, typer.Option("--input", "-i", help="JSON object, or @file.json (@- stdin).")
    ] = None,
    version: Annotated[str | None, typer.Option(help="A version (the latest by default).")] = None,
    business_key: Annotated[str | None, typer.Option(help="Your own id for the instance.")] = None,
    idempotency_key: Annotated[str | None, typer.Option(help="Same key and body: same instance.")] = None,
    watch: Annotated[bool, typer.Option("--watch", help="Follow it until it ends.")] = False,
    timeout: Annotated[float, typer.Option(help="With --watch: give up after this many seconds.")] = 300.0,
    json_output: JsonFlag = False,
) -> None:
    """Start an instance and print its id (stdout holds only the id unless --json)."""
    data = parse_json_argument(input, option="--input")
    with _client(ctx) as client, service_errors():
        body = client.start(
            name, input=data, version=version, business_key=business_key, idempotency_key=idempotency_key
        )
    if json_output:
        print_json(body)
    else:
        sys.stdout.write(f"{body['id']}\n")
        sys.stdout.flush()
    if watch:
        _watch(ctx, str(body["id"]), until=set(END_STATUSES), timeout=timeout, interval=0.5)


@instances.command("show")
def show_instance(ctx: typer.Context, instance_id: str, json_output: JsonFlag = False) -> None:
    """An instance: status, active steps, incidents and data."""
    with _client(ctx) as client, service_errors():
        body = client.get_instance(instance_id)
    if json_output:
        print_json(body)
    else:
        _print_instance(body)


@instances.command("list")
def list_instances(
    ctx: typer.Context,
    status: Annotated[
        str | None, typer.Option(help="running, waiting, completed, failed, cancelled.")
    ] = None,
    definition: Annotated[str | None, typer.Option(help="Definition name.")] = None,
    business_key: Annotated[str | None, typer.Option()] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    cursor: Annotated[str | None, typer.Option(help="next_cursor of the previous page.")] = None,
    json_output: JsonFlag = False,
) -> None:
    """Instances, newest first."""
    with _client(ctx) as client, service_errors():
        body = client.list_instances(
            status=status, definition=definition, business_key=business_key, limit=limit, cursor=cursor
        )
    if json_output:
        print_json(body)
        return
    table = Table("id", "definition", "version", "status", "created", box=None)
    for item in body.get("items", []):
        status_value = str(item.get("status"))
        table.add_row(
            str(item.get("id")),
            str(item.get("definition")),
            str(item.get("version")),
            f"[{_status_style(status_value)}]{status_value}[/]",
            str(item.get("created_at", ""))[:19],
        )
    out.print(table)
    if body.get("next_cursor"):
        err.print(f"more: --cursor {body['next_cursor']}", markup=False)


def _event_line(event: dict[str, Any]) -> str:
    at = str(event.get("at", ""))[11:19]
    detail = ""
    if event.get("attempt"):
        detail += f" attempt {event['attempt']}"
    if event.get("task_id"):
        detail += f" task {event['task_id']}"
    if event.get("user"):
        detail += f" by {event['user']}"
    error = event.get("error")
    if isinstance(error, dict):
        problem: dict[str, Any] = error  # pyright: ignore[reportUnknownVariableType]
        detail += f"  {problem.get('type')}: {problem.get('message')}"
    return f"{at}  {event.get('step')}  {event.get('kind')}  {event.get('status')}{detail}"


@instances.command("history")
def history(ctx: typer.Context, instance_id: str, json_output: JsonFlag = False) -> None:
    """Every step event and machine step attempt of an instance."""
    with _client(ctx) as client, service_errors():
        body = client.history(instance_id)
    if json_output:
        print_json(body)
        return
    for event in body.get("steps", []):
        out.print(_event_line(event), markup=False)
    attempts = body.get("attempts", [])
    if attempts:
        table = Table("step", "step type", "attempt", "outcome", "worker", box=None, title="attempts")
        for attempt in attempts:
            table.add_row(
                str(attempt.get("step")),
                str(attempt.get("step_type")),
                str(attempt.get("attempt")),
                str(attempt.get("outcome")),
                str(attempt.get("worker") or ""),
            )
        out.print(table)


@instances.command("cancel")
def cancel(
    ctx: typer.Context,
    instance_id: str,
    reason: Annotated[str, typer.Option(help="Why (kept on the instance).")] = "",
    json_output: JsonFlag = False,
) -> None:
    """Cancel an instance (open tasks and timers are withdrawn)."""
    with _client(ctx) as client, service_errors():
        body = client.cancel(instance_id, reason=reason)
    if json_output:
        print_json(body)
    else:
        out.print(f"{body.get('id')} {body.get('status')}", markup=False)


@instances.command("retry")
def retry(
    ctx: typer.Context,
    instance_id: str,
    data: Annotated[
        str | None, typer.Option(help="JSON object (or @file) merged into the data first.")
    ] = None,
    json_output: JsonFlag = False,
) -> None:
    """Retry an instance's incidents."""
    fix = parse_json_argument(data, option="--data")
    with _client(ctx) as client, service_errors():
        body = client.retry(instance_id, data=fix)
    if json_output:
        print_json(body)
    else:
        out.print(f"{body.get('id')} {body.get('status')}", markup=False)


def _watch(ctx: typer.Context, instance_id: str, *, until: set[str], timeout: float, interval: float) -> None:
    """Print each new step event until the status is one of ``until`` or the instance ends."""
    deadline = time.monotonic() + timeout
    seen = 0
    last_status = ""
    with _client(ctx) as client, service_errors():
        while True:
            body = client.get_instance(instance_id)
            events: list[dict[str, Any]] = client.history(instance_id).get("steps", [])
            for event in events[seen:]:
                out.print(_event_line(event), markup=False)
            seen = max(seen, len(events))
            status = str(body.get("status"))
            if status != last_status:
                out.print(f"[{_status_style(status)}]instance {status}[/]", markup=True)
                last_status = status
            if status in until or status in END_STATUSES:
                break
            if time.monotonic() >= deadline:
                fail(f"instance {instance_id} still {status} after {timeout:g}s", code=EXIT_ERROR)
            time.sleep(interval)
    for incident in _items(body.get("incidents")):
        err.print(f"incident: {incident.get('step')}: {incident.get('message')}", markup=False)
    if status in until and status not in {"failed", "cancelled"}:
        return
    raise typer.Exit(EXIT_ERROR)


@instances.command("watch")
def watch(
    ctx: typer.Context,
    instance_id: str,
    timeout: Annotated[float, typer.Option(help="Give up (exit 1) after this many seconds.")] = 300.0,
    interval: Annotated[float, typer.Option(help="Seconds between polls.")] = 0.5,
    until: Annotated[
        str, typer.Option(help="Comma-separated statuses that end the watch with 0 (e.g. waiting).")
    ] = "completed",
) -> None:
    """Follow an instance step by step until it ends: exit 0 when completed, 1 when failed or cancelled."""
    wanted = {part.strip() for part in until.split(",") if part.strip()}
    _watch(ctx, instance_id, until=wanted, timeout=timeout, interval=interval)


# ---------------------------------------------------------------------------------- tasks


@tasks.command("list")
def list_tasks(
    ctx: typer.Context,
    status: Annotated[
        str | None, typer.Option(help="open, claimed, completed, cancelled (comma-separated).")
    ] = None,
    assignee: Annotated[str | None, typer.Option(help="A user id, or me.")] = None,
    candidate_group: Annotated[str | None, typer.Option("--group", help="A candidate group.")] = None,
    definition: Annotated[str | None, typer.Option()] = None,
    instance: Annotated[str | None, typer.Option("--instance", help="An instance id.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    json_output: JsonFlag = False,
) -> None:
    """The tasks you may act on."""
    with _client(ctx) as client, service_errors():
        body = client.list_tasks(
            status=status,
            assignee=assignee,
            candidate_group=candidate_group,
            definition=definition,
            instance_id=instance,
            limit=limit,
        )
    if json_output:
        print_json(body)
        return
    table = Table("id", "title", "status", "assignee", "groups", "instance", box=None)
    for item in body.get("items", []):
        table.add_row(
            str(item.get("id")),
            str(item.get("title")),
            str(item.get("status")),
            str(item.get("assignee") or ""),
            ",".join(item.get("candidate_groups") or []),
            str(item.get("instance_id")),
        )
    out.print(table)


@tasks.command("show")
def show_task(ctx: typer.Context, task_id: str, json_output: JsonFlag = False) -> None:
    """One task with its form."""
    with _client(ctx) as client, service_errors():
        body = client.get_task(task_id)
    if json_output:
        print_json(body)
        return
    out.print(
        f"[bold]{body.get('title')}[/]  {body.get('status')}  {body.get('assignee') or ''}", markup=True
    )
    out.print_json(data={"form_schema": body.get("form_schema"), "context": body.get("context")})


@tasks.command("claim")
def claim(ctx: typer.Context, task_id: str, json_output: JsonFlag = False) -> None:
    """Claim a task (exit 4 when someone else has it)."""
    with _client(ctx) as client, service_errors():
        body = client.claim(task_id)
    if json_output:
        print_json(body)
    else:
        out.print(f"{body.get('id')} claimed by {body.get('assignee')}", markup=False)


@tasks.command("complete")
def complete(
    ctx: typer.Context,
    task_id: str,
    data: Annotated[str, typer.Option("--data", "-d", help="Form data: JSON object, or @file.json.")] = "{}",
    comment: Annotated[str | None, typer.Option(help="A comment kept with the completion.")] = None,
    claim_first: Annotated[bool, typer.Option("--claim/--no-claim", help="Claim it first if open.")] = True,
    json_output: JsonFlag = False,
) -> None:
    """Complete a task with form data (exit 5 listing every form error)."""
    form = parse_json_argument(data, option="--data")
    with _client(ctx) as client, service_errors():
        if claim_first and client.get_task(task_id).get("status") == "open":
            client.claim(task_id)
        body = client.complete(task_id, form, comment=comment)
    if json_output:
        print_json(body)
    else:
        out.print(f"{body.get('id')} {body.get('status')}", markup=False)
