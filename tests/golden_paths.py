"""Where the shared golden vectors are (../shared/golden beside the checkout, or $DR_GOLDEN_DIR)."""
import os
from pathlib import Path

import pytest

GOLDEN = Path(os.environ.get("DR_GOLDEN_DIR") or Path(__file__).resolve().parents[1].parent / "shared" / "golden")


def golden_dir() -> Path:
    return GOLDEN


def require_golden(*parts) -> Path:
    """The golden path, or skip the test with a clear reason when it is absent."""
    path = GOLDEN.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"golden data not found at {path} (../shared/golden beside the checkout, or DR_GOLDEN_DIR)")
    return path
