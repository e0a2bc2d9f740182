"""The data plane: which versions are loaded and how traffic is routed between them, and the one thread
that runs the model (requests waiting at the same moment scored in one call).

    versions     the loaded versions (``LoadedVersions``) and the immutable routing snapshot
    batcher      ``BatchScorer``: the scoring thread and its queue
"""
