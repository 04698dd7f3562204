"""Scale-out on Ray (``--cluster``): the runtime (:mod:`.runtime`), worker actors and their pool
(:mod:`.actors`) and the window group (:mod:`.window_group`). Importing this package imports nothing
else: Ray is imported only by the submodules, and only when a cluster is asked for (docs/CLUSTER.md)."""
