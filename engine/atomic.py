"""Atomic file writes (defined in the contract, ``engine/contract/atomic.py``; re-exported for the engine)."""
from engine.contract.atomic import atomic_write, atomic_write_bytes, atomic_write_text, temp_path

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_text", "temp_path"]
