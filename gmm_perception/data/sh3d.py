"""A categorised CAD-object set (ModelNet-like) built from Sweet Home 3D's furniture catalogues.

Sources (Debian): `sweethome3d-furniture` (5 `.sh3f` zip libraries under
usr/share/sweethome3d/furniture/, each with `PluginFurnitureCatalog.properties`) and
`sweethome3d` (`sweethome3d.jar`, whose default catalogue is
com/eteks/sweethome3d/io/DefaultFurnitureCatalog.properties with its OBJ models under
com/eteks/sweethome3d/io/resources/). Entry N of a catalogue has `name#N`, `category#N`,
`model#N` (an OBJ path inside the archive), `id#N` and, for some, `modelRotation#N`.
Licences: CC0 / CC-BY 3.0 (libraries), GPL or CC-BY 3.0 (jar models). Models are never stored in
the repository: the set is built from the packages at set-up time.

Classes: the first rule, in table order, whose keywords occur as words (an optional plural s/es
allowed) in the lower-cased English name, and whose category matches, decides. If the name also
contains a veto word of that rule, the model is skipped as ambiguous; a name no rule matches is
skipped as unmapped. Classes with fewer than `min_models` models after loading and deduplication
are dropped (reported).

class     name keywords                                  category           veto (ambiguous)
person    male, female, boy, girl, mannequin             any
car       car, sedan, suv, van, bus, truck, beetle,      any
          chevrolet, ford focus, peugeot, renault,
          seat leon
lamp      lamp, light, lantern, chandelier, lamppost,    Lights             source
          spotlight, uplight
armchair  armchair                                       any
sofa      sofa, couch                                    any                opened
chair     chair                                          any                deck, beach, relax
bed       bed, crib, futon                               any
table     table, desk                                    any                bedside, changing,
                                                                            dressing, tennis,
                                                                            pool, football, fan
cabinet   cabinet, cupboard, wardrobe, dresser,          any                freezer, sink,
          bookcase, shelves, shelf, chest, drawers,                         washbasin
          closet, locker
tree      tree, pine, palm, poplar, acacia, cypress,     Exterior
          maple, beech, blossom, bush, bamboo, ficus
plant     plant, cactus, bonsai, yucca, orchid, tulip,   any
          lily, flower, spathiphyllum, bamboo, ficus,
          christmas tree
door      door                                           Doors and windows  frame
window    window                                         Doors and windows  shutter

'Car model' (a toy) is a car; 'source' vetoes SH3D's light-source markers, 'opened' the unfolded
sofa bed, deck/beach/relax the loungers; desks count as tables; doors and windows only count in
their own category (not 'Shower door', 'Window blind'), lamps only in Lights (not 'Stone
lantern'), trees only in Exterior (a potted 'Ficus' is a plant).

Frame: SH3D models are y up and face +z (what SH3D's front view shows; all 41 chairs built here
end with their backrest at -x); the
catalogue's `modelRotation#N` (9 numbers, a row-major 3x3 R applied as v' = R v; checked
against the catalogue's width/height/depth) first makes a model upright in that convention.
The result is turned to x forward (the model's front), y left, z up, then centred on its
bounding-box centre and scaled into the unit sphere. Catalogue width/depth/height (SH3D
stretches models to them) are not applied: the model's own proportions are kept.

Duplicates (the same normalised surface, see mesh_dataset.geometry_hash: a copy of a model at
another position, scale or vertex order, or with another modelRotation reaching the same pose)
keep the first in catalogue order. The train/test split is by model, stratified per class
(`test_fraction`, seeded), made after deduplication so that no shape is on both sides.
"""
from __future__ import annotations

import datetime
import os
import re
import sys
import tempfile
import time
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterator, NamedTuple, Sequence

import numpy as np

from gmm_perception.data.debian import cached_deb, deb_version, fetch_deb, unpack_deb
from gmm_perception.data.formats import FormatError, load_mesh
from gmm_perception.data.mesh_dataset import (MAX_FACES, PreparedMesh, archive_member,
                                              builder_parser, default_data_dir, model_rng,
                                              outputs_current, prepare_in_parallel, prepare_mesh,
                                              print_outputs, read_meta, save_outputs,
                                              stratified_split, unique_prepared)
from gmm_perception.data.mesh_ops import Y_UP_TO_Z_UP
from gmm_perception.data.shape_set import ShapeSet

PACKAGES = ("sweethome3d-furniture", "sweethome3d")
FURNITURE_DIR = "usr/share/sweethome3d/furniture"
JAR = "usr/share/sweethome3d/sweethome3d.jar"
PLUGIN_CATALOG = "PluginFurnitureCatalog.properties"
JAR_CATALOG = "com/eteks/sweethome3d/io/DefaultFurnitureCatalog.properties"
BUILDER_VERSION = 1  # bump when a change to this module changes the output
MIN_MODELS = 12
TEST_FRACTION = 0.2
# The CLI's process count: two measured 2.2x faster than one on a 2-core machine (68 s vs 152 s).
# The functions default to one: worker processes are spawned (see _prepare_all), which re-imports
# the caller's main module and so needs its `if __name__ == "__main__":` guard.
CLI_WORKERS = min(2, os.cpu_count() or 1)
# After the catalogue's rotation and the y-up -> z-up turn, a quarter turn about z takes the
# models' front (-y by then) to +x: (x, y, z)_sh3d -> (z, x, y).
_QUARTER_TURN_Z = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
SH3D_TO_ROS = _QUARTER_TURN_Z @ Y_UP_TO_Z_UP


class ClassRule(NamedTuple):
    name: str
    keywords: tuple[str, ...]
    categories: frozenset[str] | None  # None: any category
    veto: tuple[str, ...] = ()


CLASS_RULES: tuple[ClassRule, ...] = (
    ClassRule("person", ("male", "female", "boy", "girl", "mannequin"), None),
    ClassRule("car", ("car", "sedan", "suv", "van", "bus", "truck", "beetle", "chevrolet",
                      "ford focus", "peugeot", "renault", "seat leon"), None),
    ClassRule("lamp", ("lamp", "light", "lantern", "chandelier", "lamppost", "spotlight",
                       "uplight"), frozenset({"Lights"}), ("source",)),
    ClassRule("armchair", ("armchair",), None),
    ClassRule("sofa", ("sofa", "couch"), None, ("opened",)),
    ClassRule("chair", ("chair",), None, ("deck", "beach", "relax")),
    ClassRule("bed", ("bed", "crib", "futon"), None),
    ClassRule("table", ("table", "desk"), None,
              ("bedside", "changing", "dressing", "tennis", "pool", "football", "fan")),
    ClassRule("cabinet", ("cabinet", "cupboard", "wardrobe", "dresser", "bookcase", "shelves",
                          "shelf", "chest", "drawers", "closet", "locker"), None,
              ("freezer", "sink", "washbasin")),
    ClassRule("tree", ("tree", "pine", "palm", "poplar", "acacia", "cypress", "maple", "beech",
                       "blossom", "bush", "bamboo", "ficus"), frozenset({"Exterior"})),
    ClassRule("plant", ("plant", "cactus", "bonsai", "yucca", "orchid", "tulip", "lily", "flower",
                        "spathiphyllum", "bamboo", "ficus", "christmas tree"), None),
    ClassRule("door", ("door",), frozenset({"Doors and windows"}), ("frame",)),
    ClassRule("window", ("window",), frozenset({"Doors and windows"}), ("shutter",)),
)
CLASS_NAMES = tuple(rule.name for rule in CLASS_RULES)


def _words(words: Sequence[str]) -> re.Pattern:
    return re.compile(r"\b(?:" + "|".join(re.escape(w) for w in words) + r")(?:s|es)?\b")


_RULE_PATTERNS = [(rule, _words(rule.keywords), _words(rule.veto) if rule.veto else None)
                  for rule in CLASS_RULES]


def classify(name: str, category: str) -> tuple[str | None, str]:
    """(class, "") for a mapped model, else (None, reason) with reason 'unmapped' or 'ambiguous'."""
    lowered = name.lower()
    for rule, keywords, veto in _RULE_PATTERNS:
        if rule.categories is not None and category not in rule.categories:
            continue
        if keywords.search(lowered):
            if veto is not None and veto.search(lowered):
                return None, f"ambiguous: vetoed by the {rule.name} rule"
            return rule.name, ""
    return None, "unmapped: no class keyword"


# ------------------------------------------------------------------------------- catalogues

_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}


def _unescape(text: str) -> str:
    out, i = [], 0
    while i < len(text):
        char = text[i]
        if char == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", text[i + 2:i + 6]):
                out.append(chr(int(text[i + 2:i + 6], 16)))
                i += 6
                continue
            out.append(_ESCAPES.get(nxt, nxt))
            i += 2
            continue
        out.append(char)
        i += 1
    return "".join(out)


def parse_properties(text: str) -> dict[str, str]:
    """A Java .properties file: `#`/`!` comments, `key=value`, `key: value` or `key value`,
    backslash line continuations and escapes (`\\uXXXX`, `\\t`, `\\=`, ...)."""
    props: dict[str, str] = {}
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].lstrip()
        i += 1
        if not line or line[0] in "#!":
            continue
        # An odd number of trailing backslashes continues the line on the next one.
        while (len(line) - len(line.rstrip("\\"))) % 2 == 1 and i <= len(lines):
            line = line[:-1] + (lines[i].lstrip() if i < len(lines) else "")
            i += 1
        match = re.match(r"((?:\\.|[^=:\s\\])*)\s*[=:]?\s*(.*)$", line, re.DOTALL)
        props[_unescape(match.group(1))] = _unescape(match.group(2))
    return props


@dataclass(frozen=True)
class CatalogEntry:
    archive: Path  # the .sh3f or .jar
    library: str  # archive stem: 'Scopia', 'sweethome3d', ...
    index: int  # N in `name#N`
    model_id: str  # `id#N`, unique over all catalogues
    name: str
    category: str
    model: str  # member path inside the archive
    rotation: tuple[float, ...] | None  # row-major 3x3 modelRotation


def read_catalog(archive: Path, catalog: str) -> list[CatalogEntry]:
    """The entries of one archive's catalogue, in catalogue order (N = 1, 2, ... until the first
    missing `name#N`, as SH3D reads it)."""
    with zipfile.ZipFile(archive) as zf:
        # Java .properties files are ISO-8859-1 (other characters come as \\uXXXX escapes).
        props = parse_properties(zf.read(catalog).decode("latin-1"))
    entries = []
    n = 1
    while f"name#{n}" in props:
        rotation = props.get(f"modelRotation#{n}")
        values = tuple(float(v) for v in rotation.split()) if rotation else None
        if values is not None and len(values) != 9:
            raise ValueError(f"{archive}: modelRotation#{n} has {len(values)} numbers, not 9")
        entries.append(CatalogEntry(
            archive, archive.stem, n, props.get(f"id#{n}", f"{archive.stem}#{n}"),
            props[f"name#{n}"], props.get(f"category#{n}", ""),
            props.get(f"model#{n}", "").lstrip("/"), values))
        n += 1
    return entries


def find_catalogs(roots: Sequence[Path]) -> list[tuple[Path, str]]:
    """(archive, catalogue member) of every furniture library and SH3D jar under the roots."""
    found = []
    for root in roots:
        found += [(lib, PLUGIN_CATALOG) for lib in sorted((root / FURNITURE_DIR).glob("*.sh3f"))]
        jar = root / JAR
        if jar.is_file():
            found.append((jar, JAR_CATALOG))
    return found


# ---------------------------------------------------------------------------------- models

class _Task(NamedTuple):
    entry: CatalogEntry
    points_per_model: int
    seed: int
    max_faces: int


def _prepare(task: _Task) -> PreparedMesh | str:
    """The prepared model, or the reason it is broken."""
    entry = task.entry
    try:
        data = archive_member(entry.archive, entry.model)
    except KeyError:
        return f"broken: model file {entry.model or '(none)'} not in {entry.archive.name}"
    rotation = np.eye(3) if entry.rotation is None else np.reshape(entry.rotation, (3, 3))
    with tempfile.TemporaryDirectory() as tmp:
        # Only the geometry file: MTL and textures are not needed (load_mesh skips materials).
        path = Path(tmp) / PurePosixPath(entry.model).name
        path.write_bytes(data)
        try:
            mesh = load_mesh(path)
            return prepare_mesh(mesh, SH3D_TO_ROS @ rotation, task.points_per_model,
                                model_rng(task.seed, entry.model_id), task.max_faces)
        except (FormatError, ValueError) as exc:
            return f"broken: {str(exc).replace(str(path), path.name)}"


def _prepare_all(tasks: list[_Task], workers: int, progress: bool) -> Iterator[PreparedMesh | str]:
    return prepare_in_parallel(_prepare, tasks, workers, progress, "SH3D models", "model", 2)


# ----------------------------------------------------------------------------------- build

def output_paths(out_dir: Path, points_per_model: int) -> tuple[Path, Path]:
    return out_dir / f"sh3d_points_{points_per_model}.npz", out_dir / "sh3d_meshes.npz"


def _config(points_per_model: int, seed: int, packages: dict[str, str], min_models: int,
            test_fraction: float, max_faces: int) -> dict:
    return {"builder": "sh3d", "builder_version": BUILDER_VERSION,
            "points_per_model": points_per_model, "seed": seed, "packages": dict(packages),
            "min_models": min_models, "test_fraction": test_fraction, "max_faces": max_faces}


def build_from_tree(roots: Sequence[str | Path], out_dir: str | Path, points_per_model: int = 2048,
                    seed: int = 0, packages: dict[str, str] | None = None, force: bool = False,
                    min_models: int = MIN_MODELS, test_fraction: float = TEST_FRACTION,
                    max_faces: int = MAX_FACES, workers: int = 1,
                    progress: bool = True) -> tuple[Path, Path]:
    """Build (points .npz, meshes .npz) from unpacked package trees (each holding
    usr/share/sweethome3d/...); returns at once when both exist with the same config.

    `packages` (name -> version) only goes into the config and meta.
    """
    roots = [Path(r) for r in roots]
    out_dir = Path(out_dir)
    paths = output_paths(out_dir, points_per_model)
    config = _config(points_per_model, seed, packages or {}, min_models, test_fraction, max_faces)
    if not force and outputs_current(*paths, config):
        return paths
    started = time.monotonic()
    catalogs = find_catalogs(roots)
    if not catalogs:
        raise FileNotFoundError(f"no {FURNITURE_DIR}/*.sh3f or {JAR} under {roots}")
    entries = [e for archive, member in catalogs for e in read_catalog(archive, member)]

    skipped: dict[str, str] = {}
    mapped: list[tuple[CatalogEntry, str]] = []
    for entry in entries:
        cls, reason = classify(entry.name, entry.category)
        if cls is None:
            skipped[entry.model_id] = reason
        else:
            mapped.append((entry, cls))

    tasks = [_Task(entry, points_per_model, seed, max_faces) for entry, _ in mapped]
    kept = [(*mapped[k], result) for k, result in unique_prepared(
        [entry.model_id for entry, _ in mapped], _prepare_all(tasks, workers, progress), skipped)]

    per_class = Counter(cls for _, cls, _ in kept)
    dropped = {c: n for c, n in per_class.items() if n < min_models}
    for entry, cls, _ in kept:
        if cls in dropped:
            skipped[entry.model_id] = (f"class dropped: {cls} has {dropped[cls]} < {min_models}"
                                       " models")
    kept = [k for k in kept if k[1] not in dropped]
    if not kept:
        raise ValueError(f"no class has {min_models} or more usable models")
    class_names = [c for c in CLASS_NAMES if per_class.get(c, 0) >= min_models]
    classes = [cls for _, cls, _ in kept]
    model_ids = [entry.model_id for entry, _, _ in kept]

    meta = {
        "source": "sweethome3d", "config": config,
        "built": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "build_seconds": round(time.monotonic() - started, 1),
        "frame": "x forward (the model's front), y left, z up; centred, unit sphere",
        "class_rules": [rule._asdict() | {"categories": sorted(rule.categories or [])}
                        for rule in CLASS_RULES],
        "counts": {"catalogue_entries": len(entries), "mapped": len(mapped), "kept": len(kept),
                   "per_class": {c: per_class[c] for c in class_names},
                   "dropped_classes": dropped,
                   "skipped": dict(Counter(r.split(":")[0].split(" of ")[0]
                                           for r in skipped.values()))},
        "skipped": skipped,
        "models": {entry.model_id: {"name": entry.name, "category": entry.category,
                                    "library": entry.library, "faces": len(prep.faces),
                                    "original_faces": prep.original_faces,
                                    "simplified": prep.simplified}
                   for entry, _, prep in kept},
    }
    return save_outputs(*paths, [prep for _, _, prep in kept],
                        [class_names.index(c) for c in classes], class_names,
                        stratified_split(classes, model_ids, test_fraction, seed), model_ids, meta)


def build_sh3d(data_dir: str | Path | None = None, points_per_model: int = 2048, seed: int = 0,
               force: bool = False, workers: int = 1, progress: bool = True) -> tuple[Path, Path]:
    """Fetch and unpack the Debian packages into `data_dir` (default: $GMM_PERCEPTION_DATA or
    <repo>/data), then build `<data_dir>/sh3d/sh3d_points_{P}.npz` and `sh3d_meshes.npz`.

    Returns without touching the network when the outputs match (P, seed, package versions). The
    versions compared are those of the .debs in `<data_dir>/debs`; with no .deb there, the
    versions the outputs record are accepted.
    """
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    deb_dir, out_dir = data_dir / "debs", data_dir / "sh3d"
    paths = output_paths(out_dir, points_per_model)
    if not force:
        recorded = (read_meta(paths[0]) or {}).get("config", {}).get("packages", {})
        known = {p: deb_version(d) for p in PACKAGES if (d := cached_deb(p, deb_dir)) is not None}
        config = _config(points_per_model, seed, {**recorded, **known}, MIN_MODELS,
                         TEST_FRACTION, MAX_FACES)
        if outputs_current(*paths, config):
            return paths
    debs = {package: fetch_deb(package, deb_dir) for package in PACKAGES}
    roots = [unpack_deb(deb, data_dir / "pkgs" / deb.stem) for deb in debs.values()]
    return build_from_tree(roots, out_dir, points_per_model, seed,
                           {p: deb_version(d) for p, d in debs.items()}, force=force,
                           workers=workers, progress=progress)


def print_summary(points_path: Path) -> None:
    """The class table (train/test models per class) and the skip counts of a built set."""
    shapes = ShapeSet.load(points_path)
    print(f"{'class':10s} {'train':>5s} {'test':>5s}")
    for name, train, test in shapes.class_table():
        print(f"{name:10s} {train:5d} {test:5d}")
    counts = shapes.meta.get("counts", {})
    print(f"{len(shapes)} models of {counts.get('catalogue_entries')} catalogue entries; "
          f"skipped: {counts.get('skipped')}; dropped classes: {counts.get('dropped_classes')}")


def main(argv: list[str] | None = None) -> int:
    parser = builder_parser(__doc__.split("\n\n")[0], "model")
    parser.add_argument("--workers", type=int, default=CLI_WORKERS,
                        help="processes loading models (1: in this process)")
    args = parser.parse_args(argv)
    points_path, meshes_path = build_sh3d(args.data_dir, args.points, args.seed, args.force,
                                          args.workers)
    print_summary(points_path)
    print_outputs((points_path, meshes_path))
    return 0


if __name__ == "__main__":
    sys.exit(main())
