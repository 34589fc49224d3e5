"""Backends: what turns a ``bpo_local.backend.Request`` into tokens. None of them knows BPO."""
