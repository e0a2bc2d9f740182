"""The host agent's one error: an operation that cannot go on, with a message that says why.

    HostError     the command prints ``{"ok": false, "error": <message>}`` and exits 1

``OSError``, ``ValueError`` and ``zipfile.BadZipFile`` end the command the same way (``cli.main``).
"""

from __future__ import annotations


class HostError(Exception):
    """A host operation refused or failed; the message names what and what to do next."""
