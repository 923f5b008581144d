"""The record agent (agent.py) keeps the database up to date with the job-events log through the projection
(projection.py); `lfz replay` rebuilds it from the log (replay.py)."""
