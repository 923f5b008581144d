"""Import: the agent that accepts ImportRequested (agent.py) and the import run in a child process (job.py)."""
