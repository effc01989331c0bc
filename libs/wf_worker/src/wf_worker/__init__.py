"""wf_worker: the worker SDK of the workflow suite.

The same ``BaseMachineStep`` classes that appear in a definition are what a worker executes:

```python
from wf_worker import Worker

worker = Worker(steps=[ChargeCard, ReserveStock], nats_url="nats://127.0.0.1:4222", tenant=None)
await worker.run()   # SIGTERM / SIGINT: stop fetching, finish what runs, close
```

or from a shell: ``wf worker run my_module:steps`` (settings from ``WF_WORKER_*``). See
:mod:`wf_worker.worker` for the delivery contract, error reporting and threads.
"""

from wf_worker.loading import load_steps
from wf_worker.settings import WorkerSettings
from wf_worker.worker import ConsumerBindError, Worker, WorkerError, blocking, durable_name

__all__ = [
    "ConsumerBindError",
    "Worker",
    "WorkerError",
    "WorkerSettings",
    "blocking",
    "durable_name",
    "load_steps",
]
