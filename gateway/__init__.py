"""The HTTP gateway: the REST API, server-sent event streams and the OpenAI-compatible surface.

It publishes commands to the agents over Kafka, reads state from the database projection, and relays job events
live to clients. It holds no job state, so any number of gateway processes behave as one.
"""
