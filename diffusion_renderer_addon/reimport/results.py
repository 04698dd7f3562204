"""One entry point to bring an engine result (a G-buffer set or a relit set) into a scene."""
from __future__ import annotations


from . import compositor, material, names, vse
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


def import_result(manifest_path, *, scene=None, name: str | None = None, task: str = "",
                  make_material: bool = True, make_compositor: bool = True, make_vse: bool = False,
                  passes=None, vse_movie: bool = False) -> dict:
    """Import the set whose ``manifest.json`` is ``manifest_path`` (or its folder) into ``scene``
    (default: the context scene). Everything is named ``<name>.<Pass>`` where ``name`` defaults to
    ``<scene>.<task>`` (:func:`.names.base_name`, e.g. ``Shot010.Delight``); importing again under the
    same name — a re-run of the same shot/task — reuses those datablocks and switches their files. Creates:

    * one image sequence per pass (``images``: ``{pass: image name}``), paths relative to the saved .blend;
    * ``make_compositor``: a compositor node group (one output per pass, ``node_group``) and, when the
      scene already uses a compositor tree, an unconnected Group node for it (``compositor_node``,
      ``compositor_tree``); the render output is never changed;
    * ``make_material``: a Principled material from a G-buffer set, an emission material from a relit
      set (``material``);
    * ``make_vse`` (off by default: the artist's F12 output is theirs): a **muted** image strip over the
      relit EXR sequence of a relit set, over the base colour (the de-lit plate) of a G-buffer set
      (``strip``), starting at the set's first frame number, one file per scene frame; with ``vse_movie``
      and a ``relit.mp4`` in the set, a muted movie strip too (``movie_strip``).

    Render settings are not touched. Images load at the set's size (its files). Frames are never
    retimed: when the scene's frame rate differs from the set's (``fps``), ``warnings`` says so.

    Returns ``{"kind", "path", "name", "frames", "fps", "images", "warnings", …}`` with the names of what
    was created or reused.
    Raises :class:`~.sequences.ReimportError` naming the file when the set is missing or invalid."""
    import bpy

    scene = scene or bpy.context.scene
    if scene is None:
        raise ReimportError("no scene to import into")
    info = read_manifest(manifest_path)
    if info.kind not in ("gbuffer", "relit"):
        raise ReimportError(f"{info.path / 'manifest.json'}: field 'kind': unknown kind {info.kind!r}")
    label = name or names.base_name(scene.name, info, task)
    seqs = load_set_sequences(info, passes=passes, prefix=label)
    created: dict = {"kind": info.kind, "path": str(info.path), "name": label, "frames": list(info.frames),
                     "fps": info.fps, "resolution": list(info.resolution),
                     "images": {p: s.image.name for p, s in seqs.items()}, "warnings": fps_warnings(scene, info)}
    if make_compositor and seqs:
        group = compositor.build_compositor_group(label, seqs)
        created["node_group"] = group.name
        tree, node = compositor.add_group_to_scene(scene, group)
        if node is not None:
            created.update(compositor_node=node.name, compositor_tree=tree.name)
    if make_material:
        if info.kind == "relit" and "relit" in seqs:
            created["material"] = material.build_relit_material(label, seqs["relit"]).name
        elif info.kind == "gbuffer" and seqs:
            created["material"] = material.build_gbuffer_material(label, seqs).name
    plate = "relit" if info.kind == "relit" else "basecolor"
    if make_vse and plate in seqs:
        created["strip"] = vse.add_image_sequence_strip(scene, seqs[plate].image.name, seqs[plate]).name
        mp4 = (info.manifest.get("videos") or {}).get("relit")
        if vse_movie and mp4 and (info.path / mp4).is_file():
            created["movie_strip"] = vse.add_movie_strip(scene, f"{label}.mp4", str(info.path / mp4),
                                                         frame_start=info.frames[0]).name
    return created
