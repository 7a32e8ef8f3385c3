"""EuroSAT (RGB): 27,000 64x64 Sentinel-2 patches of 10 land-use classes, stored as torchvision stores
it: ``eurosat/2750/<Class>/<Class>_<n>.jpg``, from ``EuroSAT.zip`` (torchvision's URL and md5).

There is no official split: ``train``/``test`` are ZSCL/MTIL's seeded 80/20 split
(``torch.utils.data.random_split`` with ``manual_seed(42)``) over torchvision's ``ImageFolder`` order,
i.e. exactly the images MTIL trains and tests on (21,600 / 5,400). Class names are MTIL's rewritten
CLIP names ("annual crop land", "brushland or shrubland", ...), in the folders' sorted order.
"""
from __future__ import annotations

from datasets.sources import RawDataset
from datasets.utils.download import Remote, extract
from datasets.utils.file_tree import ensure_tree, seeded_split_images
from datasets.utils.folders import check_count, class_folders, scan_class_folders
from utils.errors import UserError

FOLDER = "eurosat/2750"
ARCHIVE = Remote("https://huggingface.co/datasets/torchgeo/eurosat/resolve/c877bcd43f099cd0196738f714544e355477f3fd/"
                 "EuroSAT.zip", "EuroSAT.zip", "md5:c8fa014336c82ac7804f0398fcb19387")

N_IMAGES = 27000
#: Class folders, sorted (= native label order).
FOLDERS = ("AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial", "Pasture", "PermanentCrop",
           "Residential", "River", "SeaLake")
#: ZSCL/MTIL's class names (CLIP's EuroSAT names), in native label order.
MTIL_CLASS_NAMES = ("annual crop land", "forest", "brushland or shrubland", "highway or road",
                    "industrial buildings or commercial buildings", "pasture land", "permanent crop land",
                    "residential buildings or homes or apartments", "river", "lake or sea")
#: ZSCL/MTIL's EuroSAT templates.
TEMPLATES = ("a centered satellite photo of {}.", "a centered satellite photo of a {}.",
             "a centered satellite photo of the {}.")


class EuroSAT(RawDataset):
    NAME = "eurosat"
    TEMPLATES = TEMPLATES

    def prepare(self):
        folder = ensure_tree(self.root, "EuroSAT", FOLDER, FOLDERS, ARCHIVE, self.download, self.verify_data,
                             unpack=lambda archive: extract(archive, self.root / "eurosat"))
        if tuple(class_folders(folder)) != FOLDERS:
            raise UserError(f"EuroSAT: {folder} has class folders {class_folders(folder)}, expected {list(FOLDERS)}")
        # ImageFolder's order (folders sorted, then file names sorted): the order MTIL's seeded split permutes
        self.paths, self.labels = scan_class_folders(folder, list(FOLDERS))
        check_count(f"EuroSAT: images in {folder}", len(self.paths), N_IMAGES, self.verify_data,
                    "delete it to extract or download it again")

    def native_class_names(self):
        return list(MTIL_CLASS_NAMES)

    def load_split(self, split):
        return seeded_split_images(self.paths, self.labels, split, "eurosat")
