"""Generation: the agent that serves GenerateRequested (agent.py) from a cache of loaded models (serving.py)."""
