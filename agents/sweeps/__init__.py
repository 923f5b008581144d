"""Sweeps: many training jobs of one search over hyperparameters, coordinated by whichever worker holds the sweep's
lease (see `runner`); trials are drawn by `infra.search_space` and stopped early by `stopping`."""
