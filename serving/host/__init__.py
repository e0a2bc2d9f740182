"""The host agent: the release operations on a target host, standard library only.

Run as ``python -m serving.host COMMAND --base-dir DIR ...``; it prints one JSON object.
"""
