"""Tokenization: a dataset's tokens written once as shards in the object store, and read back by training."""
