"""Shared fixtures. Tests that need ../shared/golden skip with a clear reason where it is absent."""
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
from golden_paths import GOLDEN  # noqa: E402

HDRI = REPO.parent / "shared" / "hdri"


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    if not (GOLDEN / "README.md").is_file():
        pytest.skip(f"golden vectors not found at {GOLDEN} (../shared/golden beside the checkout, or DR_GOLDEN_DIR)")
    return GOLDEN


@pytest.fixture(scope="session")
def hdri_dir() -> Path:
    if not HDRI.is_dir():
        pytest.skip(f"shared HDRIs not found at {HDRI}")
    return HDRI


@pytest.fixture(scope="session")
def ckpts(tmp_path_factory):
    """Tiny random-weight (inverse, forward) checkpoints in the published layout, made once per session."""
    from engine.random_checkpoint import write_random_checkpoint

    root = tmp_path_factory.mktemp("tiny-ckpt")
    return write_random_checkpoint(root / "inv", "inverse"), write_random_checkpoint(root / "fwd", "forward")
