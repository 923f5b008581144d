"""Training: the agent that accepts TrainRequested (agent.py) and the training run in a child process (job.py)."""
