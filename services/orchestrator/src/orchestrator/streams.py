"""The JetStream streams the orchestrator provisions (their settings and reasons: wf_platform.streams
and docs/nats.md)."""

from __future__ import annotations

from wf_platform.streams import WF_EVENTS, WF_JOBS, WF_RESULTS, WF_TASKS

__all__ = ["ORCHESTRATOR_STREAMS"]

ORCHESTRATOR_STREAMS = (WF_JOBS, WF_RESULTS, WF_TASKS, WF_EVENTS)
