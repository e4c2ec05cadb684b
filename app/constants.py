"""Names and durations shared by the worker and the client: every Redis key prefix lives here."""

from __future__ import annotations

# --- job function names (what services pass to `enqueue_job`) ---------------------------------
JOB_UPDATE_TOPIC_MEMORY = "task_update_topic_memory"
JOB_EVOLVE_MEMORY = "task_evolve_memory"
JOB_RUN_LONG_TASKS = "task_run_long_tasks"
JOB_RECONCILE_L2 = "task_reconcile_l2"
JOB_PING = "task_ping"

# --- cron names -----------------------------------------------------------------------------
CRON_L2_SCAN = "cron_l2_scan"
CRON_L2_RECONCILE = "cron_l2_reconcile"
CRON_EVOLVE_DAILY = "cron_evolve_daily"
CRON_LONG_TASK_POLL = "cron_long_task_poll"

# --- Redis keys (arq's own keys keep arq's prefixes) -------------------------------------------
KEY_PREFIX = "mw:"
L2_PENDING_COUNTS = KEY_PREFIX + "l2:pending"  # hash chat_id -> pending message count (a hint)
L2_DUE_AT = KEY_PREFIX + "l2:due-at"  # zset chat_id -> unix seconds when the chat is due by time
L2_LAST_UPDATE = KEY_PREFIX + "l2:last-update"  # hash chat_id -> unix seconds of last committed update
L2_QUEUED_PREFIX = KEY_PREFIX + "l2:queued:"  # string per chat: the arq job id of its one queued update
L2_QUEUED_CHATS = KEY_PREFIX + "l2:queued-chats"  # zset chat_id -> enqueue ms of its queued update (an index)
L2_PENDING_SEQ = KEY_PREFIX + "l2:pending-seq"  # hash chat_id -> bumped by every recording of the chat
EVOLVE_DAILY_JOB_PREFIX = "evolve:daily:"  # arq job id of a daily distillation: + "<day>:<group_id>"

# --- durations ------------------------------------------------------------------------------
L2_RECONCILE_INTERVAL_MINUTES = 10  # periodic rebuild of the Redis L2 state from Postgres
L2_RECONCILE_CHUNK = 1000  # chats per Postgres query / Redis pipeline while reconciling
L2_SCAN_BATCH = 500  # due chats claimed per Redis script call by the scan
L2_MAX_TOPICS = 12  # topics kept per chat; past it the least recently active are retired (history keeps them)
TRANSIENT_BACKOFF_BASE_SECONDS = 1.0  # first retry delay; doubles per try
TRANSIENT_BACKOFF_MAX_SECONDS = 60.0
EVOLVE_LEDGER_KEEP_DAYS = 90  # per-group daily-distillation rows older than this are pruned by the fan-out
EVOLVE_MAX_CHATS_PER_RUN = 100  # changed chats one distillation reads; the rest wait for the next run
EVOLVE_HISTORY_LIMIT = 50  # consensus versions `get_group_memory(history=True)` returns by default
