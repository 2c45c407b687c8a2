"""Persistent, exactly-once schedules: APScheduler 3 with a Redis job store and a Redis lock per firing.

Every API process runs a scheduler on the same Redis job store. When a firing is due, any
process that sees it submits it; ``ExactlyOnceExecutor`` then takes ``SET <prefix>:fire:<id>:<ms> NX``
for that scheduled run time, so exactly one process runs it. Schedules live in Redis, so they
survive restarts, and a ``DELETE`` from any process removes the job for all of them (plus a
tombstone that stops a firing racing the delete).
"""
