"""Export: the agent that accepts ExportRequested (agent.py) and the export run in a child process (job.py)."""
