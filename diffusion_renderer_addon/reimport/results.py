"""One entry point to bring an engine result (a G-buffer set or a relit set) into a scene."""
from __future__ import annotations


from . import compositor, material, vse
from .sequences import ReimportError, load_set_sequences, read_manifest

__all__ = ["import_result"]


def import_result(manifest_path, *, scene=None, make_material: bool = True, make_compositor: bool = True,
                  make_vse: bool = True, passes=None, vse_movie: bool = False) -> dict:
    """Import the set whose ``manifest.json`` is ``manifest_path`` (or its folder) into ``scene``
    (default: the context scene). Creates:

    * one image sequence per pass (``images``: ``{pass: image name}``);
    * ``make_compositor``: a compositor node group (one output per pass) and a Group node for it in the
      scene's compositor tree (``node_group``, ``compositor_node``, ``compositor_tree``);
    * ``make_material``: a Principled material from a G-buffer set, an emission material from a relit
      set (``material``);
    * ``make_vse``: for a relit set, an image strip over the relit EXR sequence (``strip``) and, with
      ``vse_movie`` and a ``relit.mp4`` in the set, a movie strip (``movie_strip``).

    Returns ``{"kind", "path", "frames", "images", …}`` with the names of what was created.
    Raises :class:`~.sequences.ReimportError` naming the file when the set is missing or invalid."""
    import bpy

    scene = scene or bpy.context.scene
    if scene is None:
        raise ReimportError("no scene to import into")
    info = read_manifest(manifest_path)
    if info.kind not in ("gbuffer", "relit"):
        raise ReimportError(f"{info.path / 'manifest.json'}: field 'kind': unknown kind {info.kind!r}")
    label = f"DR {info.label}"
    seqs = load_set_sequences(info, passes=passes, prefix=label)
    created: dict = {"kind": info.kind, "path": str(info.path), "frames": list(info.frames), "fps": info.fps,
                     "images": {name: s.image.name for name, s in seqs.items()}}
    if make_compositor and seqs:
        group = compositor.build_compositor_group(label, seqs)
        tree, node = compositor.add_group_to_scene(scene, group)
        created.update(node_group=group.name, compositor_node=node.name, compositor_tree=tree.name)
    if make_material:
        if info.kind == "relit" and "relit" in seqs:
            created["material"] = material.build_relit_material(label, seqs["relit"]).name
        elif info.kind == "gbuffer" and seqs:
            created["material"] = material.build_gbuffer_material(label, seqs).name
    if make_vse and info.kind == "relit" and "relit" in seqs:
        created["strip"] = vse.add_image_sequence_strip(scene, label, seqs["relit"]).name
        mp4 = (info.manifest.get("videos") or {}).get("relit")
        if vse_movie and mp4 and (info.path / mp4).is_file():
            created["movie_strip"] = vse.add_movie_strip(scene, f"{label} mp4", str(info.path / mp4),
                                                         frame_start=info.frames[0]).name
    return created


