"""NWPU-RESISC45 (45 remote-sensing scene classes, 700 256x256 images each), as the ImageFolder tree
``NWPU-RESISC45/<class>/<class>_<nnn>.jpg``.

The authors distribute a ``.rar`` on OneDrive (https://1drv.ms/u/s!AmgKYzARBl5ca3HNaHIlzp_IXjs), which Tusk
cannot unpack; the same tree as a zip is fetched from TorchGeo's mirror (sha256 as TorchGeo verifies it).
A tree unpacked by hand from the original ``.rar`` works as it is. There is no official split:
``train``/``test`` are the seeded 80/20 split (``random_split``, ``manual_seed(42)``, as MTIL does for
EuroSAT) over ImageFolder order (25,200 / 6,300).
Names are the folder names with spaces ("baseball diamond", ...).
"""
from __future__ import annotations

from datasets.sources import RawDataset
from datasets.utils.download import Remote
from datasets.utils.file_tree import ensure_tree, seeded_split_images
from datasets.utils.folders import check_count, class_folders, scan_class_folders
from utils.errors import UserError

FOLDER = "NWPU-RESISC45"
ARCHIVE = Remote("https://hf.co/datasets/isaaccorley/resisc45/resolve/883edc0eee77b2c84225472f10f126e3ed83fa6e/"
                 "NWPU-RESISC45.zip", "NWPU-RESISC45.zip",
                 "sha256:beeecd0b63656290ae6d65cf7763185b0c1c4c54a753ef8088d6fba3faaf1f53")
N_IMAGES = 31500
FOLDERS = ("airplane", "airport", "baseball_diamond", "basketball_court", "beach", "bridge", "chaparral", "church",
           "circular_farmland", "cloud", "commercial_area", "dense_residential", "desert", "forest", "freeway",
           "golf_course", "ground_track_field", "harbor", "industrial_area", "intersection", "island", "lake",
           "meadow", "medium_residential", "mobile_home_park", "mountain", "overpass", "palace", "parking_lot",
           "railway", "railway_station", "rectangular_farmland", "river", "roundabout", "runway", "sea_ice", "ship",
           "snowberg", "sparse_residential", "stadium", "storage_tank", "tennis_court", "terrace",
           "thermal_power_station", "wetland")


class RESISC45(RawDataset):
    NAME = "resisc45"

    def prepare(self):
        folder = ensure_tree(self.root, "RESISC45", FOLDER, [FOLDERS[0], FOLDERS[-1]], ARCHIVE, self.download,
                             self.verify_data)
        if tuple(class_folders(folder)) != FOLDERS:
            raise UserError(f"RESISC45: {folder} has {len(class_folders(folder))} class folders, expected the 45 of "
                            f"NWPU-RESISC45 ({', '.join(FOLDERS[:3])}, ...)")
        self.paths, self.labels = scan_class_folders(folder, list(FOLDERS))
        check_count(f"RESISC45: images in {folder}", len(self.paths), N_IMAGES, self.verify_data,
                    "delete it to extract or download it again")

    def native_class_names(self):
        return [c.replace("_", " ") for c in FOLDERS]

    def load_split(self, split):
        return seeded_split_images(self.paths, self.labels, split, "resisc45")
