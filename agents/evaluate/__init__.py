"""Evaluation: the agent that accepts EvaluateRequested (agent.py) and the evaluation run in a child process
(job.py)."""
