import hashlib
import io

import pytest

from serving.contract.digest import sha256_bytes, sha256_copy, sha256_file

pytestmark = pytest.mark.unit


def test_the_three_ways_hash_the_same_bytes_alike(tmp_path):
    blocks = [b"first block ", b"", b"second \x00 block"]
    whole = b"".join(blocks)
    out = io.BytesIO()
    assert sha256_copy(iter(blocks), out) == sha256_bytes(whole) == hashlib.sha256(whole).hexdigest()
    assert out.getvalue() == whole
    (tmp_path / "f").write_bytes(whole)
    assert sha256_file(tmp_path / "f", chunk=4) == sha256_bytes(whole)
