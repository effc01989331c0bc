"""Generate ``deploy/helm/workflow-suite/values.schema.json``.

The schema is long and repetitive (three services with the same shape), so it is written
here, once, and rendered to JSON; ``tests/deploy/test_helm.py`` fails when the committed
file differs from this module's output. Edit this file, then run::

    uv run python deploy/tools/values_schema.py          # rewrite the JSON file
    uv run python deploy/tools/values_schema.py --check  # exit 1 if it is stale

The schema is JSON Schema draft-07 (Helm 3 and Helm 4 both read it). It is strict on
purpose: unknown keys are errors at every level we own (a typo must not fall back to a
default silently), numbers have ranges, enums are closed, and credentials must come from
somewhere: a database URL per service unless an existing Secret is named, a NATS token /
user and password / creds unless an existing Secret is named, and so on.
Kubernetes pass-through objects (affinity, tolerations, NetworkPolicy peers, ...) are
only checked for their type: the API server validates them.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["SCHEMA_PATH", "build_schema", "main", "render"]

Schema = dict[str, Any]

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "helm" / "workflow-suite" / "values.schema.json"
SERVICE_KEYS = ("definitionRegistry", "orchestrator", "taskInbox")


def obj(properties: Schema, *, required: Sequence[str] = (), description: str = "", **extra: Any) -> Schema:
    """A closed object: only ``properties`` are allowed."""
    schema: Schema = {"type": "object"}
    if description:
        schema["description"] = description
    schema["properties"] = properties
    schema["additionalProperties"] = False
    if required:
        schema["required"] = list(required)
    schema.update(extra)
    return schema


def integer(minimum: int | None = None, maximum: int | None = None) -> Schema:
    schema: Schema = {"type": "integer"}
    if minimum is not None:
        schema["minimum"] = minimum
    if maximum is not None:
        schema["maximum"] = maximum
    return schema


def when(condition: Schema, then: Schema) -> Schema:
    return {"if": condition, "then": then}


STRING: Schema = {"type": "string"}
BOOL: Schema = {"type": "boolean"}
STRING_MAP: Schema = {"type": "object", "additionalProperties": {"type": "string"}}
OBJECTS: Schema = {"type": "array", "items": {"type": "object"}}
PORT = integer(1, 65535)
QUANTITY: Schema = {
    "type": ["string", "number"],
    "pattern": r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti|P|Pi|E|Ei)?$",
}
SECRET_KEY: Schema = {"type": "string", "minLength": 1, "pattern": r"^[-._a-zA-Z0-9]+$"}
OPTIONAL_SECRET_KEY: Schema = {"type": "string", "pattern": r"^[-._a-zA-Z0-9]*$"}
# An object name, or "" for "not set".
NAME: Schema = {"type": "string", "maxLength": 253, "pattern": r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?)?$"}
DNS_LABEL: Schema = {"type": "string", "maxLength": 53, "pattern": r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?)?$"}
HOST: Schema = {
    "type": "string",
    "pattern": r"^((\*\.)?([a-z0-9]([-a-z0-9]*[a-z0-9])?\.)*[a-z0-9]([-a-z0-9]*[a-z0-9])?)?$",
}
HTTP_URL: Schema = {"type": "string", "pattern": r"^(https?://\S+)?$"}
DATABASE_URL: Schema = {"type": "string", "pattern": r"^(postgresql(\+asyncpg)?://\S+)?$"}
NATS_URL: Schema = {
    "type": "string",
    "pattern": r"^(nats|tls|ws|wss)://[^,\s]+(,(nats|tls|ws|wss)://[^,\s]+)*$",
}
IMAGE_TAG: Schema = {"type": "string", "pattern": r"^([A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?$"}
DURATION: Schema = {"type": "string", "pattern": r"^[0-9]+(ms|s|m|h)$"}
LOG_LEVEL: Schema = {"type": "string", "enum": ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]}
INT_OR_PERCENT: Schema = {"oneOf": [integer(0), {"type": "string", "pattern": r"^[0-9]+%$"}]}
JWT_ALGORITHM = r"(RS256|RS384|RS512|ES256|ES384|ES512|PS256|PS384|PS512|EdDSA)"
NO_EXISTING_SECRET: Schema = {"existingSecret": {"const": ""}}


def ref(name: str) -> Schema:
    return {"$ref": f"#/definitions/{name}"}


def definitions() -> Schema:
    """Shared pieces, referenced with ``$ref``."""
    resources = obj(
        {
            "requests": obj(
                {"cpu": QUANTITY, "memory": QUANTITY, "ephemeral-storage": QUANTITY},
                required=["cpu", "memory"],
            ),
            "limits": obj({"cpu": QUANTITY, "memory": QUANTITY, "ephemeral-storage": QUANTITY}),
        },
        required=["requests"],
        description="Container resources; requests.cpu and requests.memory are required.",
    )
    image = obj(
        {
            "repository": {"type": "string", "minLength": 1},
            "tag": IMAGE_TAG,
            "digest": {"type": "string", "pattern": r"^(sha256:[a-f0-9]{64})?$"},
            "pullPolicy": {"type": "string", "enum": ["", "Always", "IfNotPresent", "Never"]},
        },
        required=["repository"],
    )
    env: Schema = {
        "type": "object",
        "description": "Extra non-secret settings: NAME -> value, added to the ConfigMap.",
        "propertyNames": {"pattern": r"^[A-Za-z_][A-Za-z0-9_]*$"},
        "additionalProperties": {"type": ["string", "number", "boolean"]},
    }
    extra_env: Schema = {
        "type": "array",
        "items": {
            "type": "object",
            "required": ["name"],
            "properties": {"name": {"type": "string", "minLength": 1}},
        },
    }
    defs: Schema = {
        "resources": resources,
        "componentImage": image,
        "env": env,
        "extraEnv": extra_env,
        "peers": {"type": "array", "items": {"type": "object"}, "description": "NetworkPolicyPeer objects."},
        "probe": obj(
            {
                "initialDelaySeconds": integer(0),
                "periodSeconds": integer(1),
                "timeoutSeconds": integer(1),
                "failureThreshold": integer(1),
                "successThreshold": integer(1),
            }
        ),
    }
    defs.update(services())
    defs["worker"] = worker()
    return defs


def pod_properties() -> Schema:
    """What every Deployment of the chart (services and worker) accepts."""
    return {
        "image": ref("componentImage"),
        "replicaCount": integer(0),
        "resources": ref("resources"),
        "logLevel": LOG_LEVEL,
        "env": ref("env"),
        "extraEnv": ref("extraEnv"),
        "podAnnotations": STRING_MAP,
        "podLabels": STRING_MAP,
        "nodeSelector": STRING_MAP,
        "tolerations": OBJECTS,
        "affinity": {"type": "object"},
        "topologySpreadConstraints": OBJECTS,
        "priorityClassName": STRING,
        "terminationGracePeriodSeconds": integer(0),
    }


def services() -> Schema:
    base = pod_properties()
    base.update(
        {
            "dbPoolSize": integer(1),
            "service": obj(
                {
                    "type": {"type": "string", "enum": ["ClusterIP", "NodePort", "LoadBalancer"]},
                    "port": PORT,
                    "annotations": STRING_MAP,
                },
                required=["type", "port"],
            ),
            "autoscaling": obj(
                {
                    "enabled": BOOL,
                    "minReplicas": integer(1),
                    "maxReplicas": integer(1),
                    "targetCPUUtilizationPercentage": {
                        "type": ["integer", "null"],
                        "minimum": 1,
                        "maximum": 100,
                    },
                    "targetMemoryUtilizationPercentage": {
                        "type": ["integer", "null"],
                        "minimum": 1,
                        "maximum": 100,
                    },
                    "behavior": {"type": "object"},
                },
                required=["enabled", "minReplicas", "maxReplicas"],
            ),
            "podDisruptionBudget": obj(
                {"enabled": BOOL, "minAvailable": INT_OR_PERCENT, "maxUnavailable": INT_OR_PERCENT},
                required=["enabled"],
                description="Set at most one of minAvailable / maxUnavailable (neither: maxUnavailable 1).",
                **{"not": {"required": ["minAvailable", "maxUnavailable"]}},
            ),
            "migration": obj(
                {
                    "enabled": BOOL,
                    "backoffLimit": integer(0),
                    "activeDeadlineSeconds": integer(1),
                    "resources": ref("resources"),
                },
                required=["enabled", "backoffLimit", "activeDeadlineSeconds", "resources"],
            ),
        }
    )
    required = [
        "image",
        "replicaCount",
        "resources",
        "service",
        "autoscaling",
        "podDisruptionBudget",
        "migration",
    ]
    extras: dict[str, tuple[str, Schema]] = {
        "definitionRegistry": ("definition-registry (port 8001)", {}),
        "orchestrator": ("orchestrator (port 8002)", {"registryUrl": HTTP_URL}),
        "taskInbox": (
            "task-inbox (port 8003)",
            {
                "orchestratorUrl": HTTP_URL,
                "devLogin": obj(
                    {
                        "enabled": BOOL,
                        "privateKeySecret": obj({"name": NAME, "key": SECRET_KEY}, required=["name", "key"]),
                    },
                    required=["enabled", "privateKeySecret"],
                ),
            },
        ),
    }
    result: Schema = {}
    for key, (description, extra) in extras.items():
        properties = copy.deepcopy(base)
        properties.update(extra)
        result[key] = obj(properties, required=required, description=description)
    return result


def worker() -> Schema:
    properties = pod_properties()
    properties.update(
        {
            "enabled": BOOL,
            "command": {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1}},
            "tenant": {"type": "string", "pattern": r"^(\*|[a-z][a-z0-9_]{2,31})$"},
            "healthPort": PORT,
        }
    )
    return obj(
        properties,
        required=["enabled", "image", "command", "replicaCount", "resources", "healthPort"],
        description="An optional machine-step worker (wf worker run <module>:<attribute>).",
    )


def database() -> Schema:
    schema = obj(
        {
            "existingSecret": NAME,
            "secretKeys": obj(dict.fromkeys(SERVICE_KEYS, SECRET_KEY), required=SERVICE_KEYS),
            "urls": obj(dict.fromkeys(SERVICE_KEYS, DATABASE_URL)),
            "poolSize": integer(1),
        },
        required=["existingSecret", "secretKeys", "urls", "poolSize"],
        description="PostgreSQL: an existing Secret with one URL per service, or the URLs themselves.",
    )
    # Without an existing Secret, every service needs its URL.
    schema.update(
        when(
            {"properties": NO_EXISTING_SECRET},
            {
                "properties": {
                    "urls": {
                        "required": list(SERVICE_KEYS),
                        "properties": {k: {"minLength": 1} for k in SERVICE_KEYS},
                    }
                }
            },
        )
    )
    return schema


def nats() -> Schema:
    auth = obj(
        {
            "mode": {"type": "string", "enum": ["none", "token", "userPassword", "creds"]},
            "existingSecret": NAME,
            "secretKeys": obj(
                dict.fromkeys(("token", "user", "password", "creds"), SECRET_KEY),
                required=["token", "user", "password", "creds"],
            ),
            "token": STRING,
            "user": STRING,
            "password": STRING,
            "creds": STRING,
        },
        required=["mode", "existingSecret", "secretKeys"],
    )
    # Without an existing Secret, the chosen mode's credentials must be given.
    needs = {"token": ["token"], "userPassword": ["user", "password"], "creds": ["creds"]}
    auth["allOf"] = [
        when(
            {"properties": {"mode": {"const": mode}, **NO_EXISTING_SECRET}},
            {"properties": {field: {"minLength": 1} for field in fields}, "required": fields},
        )
        for mode, fields in needs.items()
    ]
    tls = obj(
        {
            "enabled": BOOL,
            "existingSecret": NAME,
            "caKey": SECRET_KEY,
            "certKey": OPTIONAL_SECRET_KEY,
            "keyKey": OPTIONAL_SECRET_KEY,
        },
        required=["enabled", "existingSecret", "caKey"],
    )
    tls["allOf"] = [
        when(
            {"properties": {"enabled": {"const": True}}}, {"properties": {"existingSecret": {"minLength": 1}}}
        ),
        when(
            {"properties": {"certKey": {"minLength": 1}}, "required": ["certKey"]},
            {"properties": {"keyKey": {"minLength": 1}}, "required": ["keyKey"]},
        ),
    ]
    return obj(
        {"url": NATS_URL, "auth": auth, "tls": tls},
        required=["url", "auth", "tls"],
        description="NATS with JetStream (external).",
    )


def auth() -> Schema:
    schema = obj(
        {
            "existingSecret": NAME,
            "secretKeys": obj(
                dict.fromkeys(("jwksUrl", "issuer", "audience"), SECRET_KEY),
                required=["jwksUrl", "issuer", "audience"],
            ),
            "jwksUrl": HTTP_URL,
            "issuer": STRING,
            "audience": STRING,
            "algorithms": {"type": "string", "pattern": rf"^{JWT_ALGORITHM}(,{JWT_ALGORITHM})*$"},
            "leewaySeconds": integer(0, 600),
            "publicKeySecret": obj({"name": NAME, "key": SECRET_KEY}, required=["name", "key"]),
        },
        required=["existingSecret", "secretKeys", "algorithms", "leewaySeconds", "publicKeySecret"],
        description="JWT verification (<PREFIX>_JWT_*).",
    )
    schema.update(
        when(
            {"properties": NO_EXISTING_SECRET},
            {
                "properties": {"issuer": {"minLength": 1}, "audience": {"minLength": 1}},
                "required": ["issuer", "audience"],
            },
        )
    )
    return schema


def otel() -> Schema:
    schema = obj(
        {
            "enabled": BOOL,
            "endpoint": HTTP_URL,
            # The services ship the OTLP/HTTP protobuf exporter only.
            "protocol": {"type": "string", "enum": ["http/protobuf"]},
            "tracesSampler": {
                "type": "string",
                "enum": [
                    "always_on",
                    "always_off",
                    "traceidratio",
                    "parentbased_always_on",
                    "parentbased_always_off",
                    "parentbased_traceidratio",
                ],
            },
            "tracesSamplerArg": {"type": "string", "pattern": r"^(0(\.[0-9]+)?|1(\.0+)?)$"},
            "resourceAttributes": {"type": "string", "pattern": r"^([^=,\s]+=[^,]*(,[^=,\s]+=[^,]*)*)?$"},
            "headersSecret": obj({"name": NAME, "key": OPTIONAL_SECRET_KEY}),
        },
        required=["enabled", "endpoint", "protocol"],
        description="OpenTelemetry export (standard OTEL_* variables).",
    )
    schema.update(
        when({"properties": {"enabled": {"const": True}}}, {"properties": {"endpoint": {"minLength": 1}}})
    )
    return schema


def network_policy() -> Schema:
    def port_to() -> Schema:
        return obj({"port": PORT, "to": ref("peers")}, required=["port"])

    def ports_to() -> Schema:
        return obj(
            {"ports": {"type": "array", "minItems": 1, "items": PORT}, "to": ref("peers")}, required=["ports"]
        )

    return obj(
        {
            "enabled": BOOL,
            "ingressFrom": obj({"ingressController": ref("peers"), "monitoring": ref("peers")}),
            "extraIngress": OBJECTS,
            "egress": obj(
                {
                    "restrict": BOOL,
                    "dns": ports_to(),
                    "postgres": port_to(),
                    "nats": port_to(),
                    "otel": ports_to(),
                    "https": port_to(),
                    "extra": OBJECTS,
                },
                required=["restrict", "dns", "postgres", "nats", "otel", "https"],
            ),
        },
        required=["enabled", "egress"],
    )


def build_schema() -> Schema:
    """The whole values schema."""
    top_level: Schema = {
        "global": {"type": "object", "description": "Helm's global values (unused by this chart)."},
        "nameOverride": DNS_LABEL,
        "fullnameOverride": DNS_LABEL,
        "commonLabels": STRING_MAP,
        "image": obj(
            {
                "registry": {"type": "string", "pattern": r"^[^\s:/]*(:[0-9]+)?(/[^\s:]+)*$"},
                "tag": IMAGE_TAG,
                "pullPolicy": {"type": "string", "enum": ["Always", "IfNotPresent", "Never"]},
            },
            required=["registry", "tag", "pullPolicy"],
        ),
        "imagePullSecrets": {
            "type": "array",
            "items": obj({"name": {"type": "string", "minLength": 1}}, required=["name"]),
        },
        "serviceAccount": obj(
            {"create": BOOL, "name": NAME, "annotations": STRING_MAP}, required=["create", "name"]
        ),
        "podSecurityContext": {
            "type": "object",
            "description": "Pod securityContext; the pods must run as non-root.",
            "properties": {
                "runAsNonRoot": {"const": True},
                "runAsUser": integer(1),
                "runAsGroup": integer(0),
                "fsGroup": integer(0),
            },
            "required": ["runAsNonRoot"],
        },
        "containerSecurityContext": {
            "type": "object",
            "description": "Container securityContext; privilege escalation stays off.",
            "properties": {
                "allowPrivilegeEscalation": {"const": False},
                "readOnlyRootFilesystem": BOOL,
                "runAsNonRoot": BOOL,
                "capabilities": {"type": "object"},
            },
            "required": ["allowPrivilegeEscalation"],
        },
        "tmpSizeLimit": QUANTITY,
        "logLevel": LOG_LEVEL,
        "accessLog": BOOL,
        "maxBodyBytes": integer(1024),
        "database": database(),
        "nats": nats(),
        "auth": auth(),
        "otel": otel(),
        "probes": obj(
            {"startup": ref("probe"), "liveness": ref("probe"), "readiness": ref("probe")},
            required=["startup", "liveness", "readiness"],
        ),
        "topologySpread": obj(
            {
                "enabled": BOOL,
                "maxSkew": integer(1),
                "whenUnsatisfiable": {"type": "string", "enum": ["ScheduleAnyway", "DoNotSchedule"]},
                "topologyKeys": {"type": "array", "items": {"type": "string", "minLength": 1}},
            },
            required=["enabled"],
        ),
        "definitionRegistry": ref("definitionRegistry"),
        "orchestrator": ref("orchestrator"),
        "taskInbox": ref("taskInbox"),
        "worker": ref("worker"),
        "ingress": obj(
            {
                "enabled": BOOL,
                "className": STRING,
                "annotations": STRING_MAP,
                "host": HOST,
                "serviceHosts": obj({"definitionRegistry": HOST, "orchestrator": HOST}),
                "tls": {
                    "type": "array",
                    "items": obj(
                        {"secretName": NAME, "hosts": {"type": "array", "items": HOST}}, required=["hosts"]
                    ),
                },
            },
            required=["enabled"],
            description="One Ingress: /v1/definitions, /v1/instances and / (the web inbox and /v1/tasks).",
        ),
        "serviceMonitor": obj(
            {"enabled": BOOL, "interval": DURATION, "scrapeTimeout": DURATION, "labels": STRING_MAP},
            required=["enabled"],
        ),
        "networkPolicy": network_policy(),
    }
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "workflow-suite values",
        "description": (
            "Generated by deploy/tools/values_schema.py; do not edit by hand. Unknown keys are errors: "
            "a typo must not silently fall back to a default."
        ),
        "type": "object",
        "additionalProperties": False,
        "required": [
            "image",
            "serviceAccount",
            "podSecurityContext",
            "containerSecurityContext",
            "database",
            "nats",
            "auth",
            "otel",
            "probes",
            "topologySpread",
            *SERVICE_KEYS,
            "worker",
            "ingress",
            "serviceMonitor",
            "networkPolicy",
        ],
        "properties": top_level,
        "definitions": definitions(),
    }


def render() -> str:
    """The schema as the committed file holds it."""
    return json.dumps(build_schema(), indent=2) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Write the schema, or with ``--check`` report whether the committed file is current."""
    parser = argparse.ArgumentParser(description="Generate the chart's values.schema.json.")
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed file is out of date")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = SCHEMA_PATH.read_text() if SCHEMA_PATH.exists() else ""
        if current != text:
            sys.stderr.write(f"{SCHEMA_PATH} is out of date: run python deploy/tools/values_schema.py\n")
            return 1
        return 0
    SCHEMA_PATH.write_text(text)
    sys.stdout.write(f"{SCHEMA_PATH}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
