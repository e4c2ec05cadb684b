"""L2 topic memory: recorded chat messages folded into each chat's topics, exactly once.

schemas.py      the types services see (NewMessage, RecordResult, TopicMemoryView, ...)
validation.py   input checks that name `messages[i].field`
service.py      record, update (one transaction under the chat's row lock), read
folding.py      model call + draft validation + our topic ids (no I/O: reusable, e.g. rebuilds)
scheduling.py   due-chat scan and reconcile (Redis rebuilt from Postgres)
repository.py   every SQL statement;  redis_state.py  every Redis command (Lua scripts)
jobs.py         the arq jobs and crons;  client.py  the `MemoryClient` methods
"""
