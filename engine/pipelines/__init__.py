"""Inverse (de-lighting) and forward (re-lighting) pipelines."""
from engine.pipelines.forward import GBUFFER_ORDER, ForwardRenderer
from engine.pipelines.inverse import DEFAULT_PASSES, PASS_INDEX, InverseRenderer
from engine.pipelines.lighting import EnvLight
from engine.pipelines.sampling import Cancelled

__all__ = ["ForwardRenderer", "InverseRenderer", "EnvLight", "Cancelled", "GBUFFER_ORDER", "PASS_INDEX",
           "DEFAULT_PASSES"]
