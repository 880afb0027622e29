"""API keys: format, hashing, namespace scopes (no I/O)."""
from __future__ import annotations

import hashlib

import pytest

from clusterflow.keys import ApiKey, check_namespaces, generate_key, hash_key, key_id_of


def test_a_key_is_random_has_a_lookup_id_and_only_its_hash_is_kept():
    key_id, key = generate_key()
    other_id, other = generate_key()
    assert key != other and key_id != other_id
    assert key.startswith(f"cfk_{key_id}_") and len(key) == 4 + 12 + 1 + 43
    assert key_id_of(key) == key_id
    assert hash_key(key) == hashlib.sha256(key.encode()).hexdigest() and len(hash_key(key)) == 64
    for bad in ("", "cfk_", "Bearer " + key, key + "x", key.replace("cfk_", "abc_"), key[:-1]):
        assert key_id_of(bad) is None


def test_namespaces_are_checked_and_star_means_all():
    assert check_namespaces(["a", "b", "a"]) == ["a", "b"]
    assert check_namespaces(["a", "*"]) == ["*"]
    for bad in ([], ["has space"], ["x" * 129], ["semi;colon"], [""]):
        with pytest.raises(ValueError):
            check_namespaces(bad)
    scoped = ApiKey("k", ("a", "b"))
    assert scoped.allows("a") and scoped.allows("b") and not scoped.allows("c") and scoped.only_namespace is None
    assert ApiKey("k", ("*",)).allows("anything") and ApiKey("k", ("*",)).only_namespace is None
    assert ApiKey("k", ("a",)).only_namespace == "a"
