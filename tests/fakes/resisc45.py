"""Tiny NWPU-RESISC45 ImageFolder tree (``NWPU-RESISC45/<class>/<class>_<nnn>.jpg``)."""
from __future__ import annotations

from pathlib import Path

from fakes.image_tree import write_label_image

FOLDERS = ("airplane", "airport", "baseball_diamond", "basketball_court", "beach", "bridge", "chaparral", "church",
           "circular_farmland", "cloud", "commercial_area", "dense_residential", "desert", "forest", "freeway",
           "golf_course", "ground_track_field", "harbor", "industrial_area", "intersection", "island", "lake",
           "meadow", "medium_residential", "mobile_home_park", "mountain", "overpass", "palace", "parking_lot",
           "railway", "railway_station", "rectangular_farmland", "river", "roundabout", "runway", "sea_ice", "ship",
           "snowberg", "sparse_residential", "stadium", "storage_tank", "tennis_court", "terrace",
           "thermal_power_station", "wetland")


def write_resisc45(root: Path, per_class: int = 3) -> Path:
    tree = root / "NWPU-RESISC45"
    for label, name in enumerate(FOLDERS):
        for i in range(1, per_class + 1):
            write_label_image(tree / name / f"{name}_{i:03d}.jpg", label)
    return tree
