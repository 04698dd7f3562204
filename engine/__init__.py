"""DiffusionRenderer engine: models, pipelines and CLI (torch side; never imports bpy)."""

__version__ = "0.1.0"

__all__ = ["__version__"]
