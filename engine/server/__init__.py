"""`diffusion-renderer serve`: the engine as a long-lived subprocess speaking engine.contract.protocol on stdin/stdout."""
from engine.server.serve import Server, add_serve_arguments, main

__all__ = ["Server", "add_serve_arguments", "main"]
