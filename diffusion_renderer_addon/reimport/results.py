"""One entry point to bring an engine result (a G-buffer set or a relit set) into a scene."""
from __future__ import annotations


from . import compositor, material, vse
from .sequences import ReimportError, load_set_sequences, read_manifest

__all__ = ["import_result", "fps_warnings"]


def fps_warnings(scene, info) -> list[str]:
    """A line when the scene plays at another rate than the set was made at (nothing is retimed)."""
    scene_fps = scene.render.fps / scene.render.fps_base
    if abs(scene_fps - info.fps) <= 1e-3:
        return []
    return [f"{info.path.name}: the set is {info.fps:g} fps but the scene plays at {scene_fps:g} fps; its frames "
            f"are placed one per scene frame at their own numbers (not retimed): set Output Properties › Frame "
            f"Rate to {info.fps:g} to play it at its speed"]


def import_result(manifest_path, *, scene=None, make_material: bool = True, make_compositor: bool = True,
                  make_vse: bool = True, passes=None, vse_movie: bool = False) -> dict:
    """Import the set whose ``manifest.json`` is ``manifest_path`` (or its folder) into ``scene``
    (default: the context scene). Creates:

    * one image sequence per pass (``images``: ``{pass: image name}``);
    * ``make_compositor``: a compositor node group (one output per pass) and a Group node for it in the
      scene's compositor tree (``node_group``, ``compositor_node``, ``compositor_tree``);
    * ``make_material``: a Principled material from a G-buffer set, an emission material from a relit
      set (``material``);
    * ``make_vse``: an image strip over the relit EXR sequence of a relit set, over the base colour (the
      de-lit plate) of a G-buffer set (``strip``), starting at the set's first frame number and one file
      per scene frame — it spans exactly the plate's frames; with ``vse_movie`` and a ``relit.mp4`` in
      the set, a movie strip too (``movie_strip``, the mp4 keeps its own rate).

    Images load at the set's size (its files). Frames are never retimed: when the scene's frame rate
    differs from the set's (``fps``), ``warnings`` says so (set the scene's rate to play it at speed).

    Returns ``{"kind", "path", "frames", "fps", "images", "warnings", …}`` with the names of what was
    created.
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
                     "resolution": list(info.resolution), "images": {name: s.image.name for name, s in seqs.items()},
                     "warnings": fps_warnings(scene, info)}
    if make_compositor and seqs:
        group = compositor.build_compositor_group(label, seqs)
        tree, node = compositor.add_group_to_scene(scene, group)
        created.update(node_group=group.name, compositor_node=node.name, compositor_tree=tree.name)
    if make_material:
        if info.kind == "relit" and "relit" in seqs:
            created["material"] = material.build_relit_material(label, seqs["relit"]).name
        elif info.kind == "gbuffer" and seqs:
            created["material"] = material.build_gbuffer_material(label, seqs).name
    plate = "relit" if info.kind == "relit" else "basecolor"
    if make_vse and plate in seqs:
        name = label if plate == "relit" else f"{label}.{plate}"
        created["strip"] = vse.add_image_sequence_strip(scene, name, seqs[plate]).name
        mp4 = (info.manifest.get("videos") or {}).get("relit")
        if vse_movie and mp4 and (info.path / mp4).is_file():
            created["movie_strip"] = vse.add_movie_strip(scene, f"{label} mp4", str(info.path / mp4),
                                                         frame_start=info.frames[0]).name
    return created


