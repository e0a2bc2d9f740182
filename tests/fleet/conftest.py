"""Fixtures for fleets of real hosts: Linux network namespaces with their own address and sshd (testkit.netns)."""

from __future__ import annotations

import contextlib

import pytest


@pytest.fixture(scope="module")
def netns_hosts(tmp_path_factory):
    """``netns_hosts(n)``: n hosts (namespaces, each with sshd on its own address), removed at the module's end
    whatever happened. Skipped, with the reason, where namespaces cannot be made (not root, no iproute2)."""
    from testkit import netns

    reason = netns.unavailable()
    if reason:
        pytest.skip(reason)
    with contextlib.ExitStack() as stack:
        yield lambda n: stack.enter_context(netns.netns_hosts(n, tmp_path_factory.mktemp("netns")))
