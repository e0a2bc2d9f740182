"""Prefect flows: the order of the release stages and the decisions between them."""
