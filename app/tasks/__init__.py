"""Long tasks: durable, multi-step state machines in Postgres that survive worker crashes.

registry.py    TaskType/State declarations, graph checks at declaration, the type registry
step.py        StepContext (what a handler gets: input, data, spawn, on_commit, check_canceled)
engine.py      one run: claim batches (SKIP LOCKED + lease), run tasks side by side, release
runner.py      one claimed task: step, heartbeat, conditional commit, retries, cancellation
outcome.py     pure rules turning a step's result into the row values it commits
channel.py     the run's one autocommit connection for single-statement writes
repository.py  every query on `long_tasks`
service.py     create/get/list/cancel/retry (validated; used by the client mixin)
jobs.py        the arq job and cron (thin wrappers in `run_guarded`)
builtin/       rebuild_topic_memory, export_memories, purge_chat
"""
