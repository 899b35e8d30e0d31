"""Cached functions with rules, imported in different orders by separate processes
(tests/test_rule_identity.py)."""
