"""The VTAB class-incremental benchmark of ADAM/APER (Zhou et al., ``zhoudw-zdw/RevisitingCIL``), as
PILOT and CLAP4CLIP use it: 50 classes, 10 from each of five VTAB-1k datasets (RESISC45, DTD, Oxford
Pets, EuroSAT, Flowers-102), distributed ready-made as the ImageFolder trees ``vtab/train/<class>/`` and
``vtab/test/<class>/``.

The images are ADAM's samples of VTAB-1k splits, which cannot be rebuilt from the raw datasets, so
this source reads ADAM's trees (the archive from the RevisitingCIL README's OneDrive link; no checksum is
published, so it is not verified). Labels are ImageFolder indices (folders sorted), as in ADAM, PILOT
and CLAP4CLIP; the 10 classes of each domain are consecutive (RESISC45 0-9, DTD 10-19, Pets 20-29,
EuroSAT 30-39, Flowers 40-49). The names are CLAP4CLIP's for those indices (its ``dataset/vtab.py``),
which carry the domain ("banded texture", "Abyssinian pet", ...); its templates are "a photo of a/the {}.".
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

from datasets.sources import RawDataset
from datasets.utils.download import Remote, extract
from datasets.utils.file_tree import ensure_tree
from datasets.utils.folders import class_folders, scan_class_folders
from datasets.utils.image_source import FileImages
from utils.errors import UserError

FOLDER = "vtab"
ARCHIVE = Remote("https://entuedu-my.sharepoint.com/:u:/g/personal/n2207876b_e_ntu_edu_sg/"
                 "EQyTP1nOIH5PrfhXtpPgKQ8BlEFW2Erda1t7Kdi3Al-ePw?e=Yt4RnV", "vtab.zip", None, "onedrive")
#: The same archive on Google Drive (RevisitingCIL README), to fetch by hand if OneDrive fails.
GOOGLE_DRIVE = "https://drive.google.com/file/d/1xUiwlnx4k0oDhYi26KL5KwrCAya-mvJ_/view?usp=sharing"

#: CLAP4CLIP's names of ADAM's 50 VTAB classes, by ImageFolder index.
VTAB_CLASS_NAMES = (
    "airplane", "airport", "baseball diamond", "basketball court", "beach", "bridge", "chaparral", "church",
    "circular farmland", "cloud",
    "banded texture", "blotchy texture", "braided texture", "bubbly texture", "bumpy texture", "chequered texture",
    "cobwebbed texture", "cracked texture", "crosshatched texture", "crystalline texture",
    "Abyssinian pet", "american bulldog pet", "staffordshire bull terrier pet", "basset hound pet", "beagle pet",
    "Bengal pet", "Birman pet", "Bombay pet", "boxer pet", "British Shorthair pet",
    "annual crop land", "forest", "brushland or shrubland", "highway or road",
    "industrial buildings or commercial buildings", "pasture land", "permanent crop land",
    "residential buildings or homes or apartments", "river", "lake or sea",
    "mexican petunia flower", "wild pansy flower", "californian poppy flower", "sunflower", "pink primrose flower",
    "bishop of llandaff flower", "gaura flower", "geranium flower", "orange dahlia flower", "pink-yellow dahlia flower",
)
TEMPLATES = ("a photo of a {}.", "a photo of the {}.")


class VTAB(RawDataset):
    NAME = "vtab"
    TEMPLATES = TEMPLATES

    def prepare(self):
        self.folder = ensure_tree(self.root, "VTAB (ADAM)", FOLDER, ["train", "test"], ARCHIVE, self.download,
                                  self.verify_data, unpack=self._unpack)
        self.classes = class_folders(self.folder / "train")      # ImageFolder's labels: sorted folder indices
        if class_folders(self.folder / "test") != self.classes:
            raise UserError(f"VTAB: {self.folder}/train and {self.folder}/test have different class folders")
        if len(self.classes) != len(VTAB_CLASS_NAMES):
            raise UserError(f"VTAB: {self.folder}/train has {len(self.classes)} class folders, expected the "
                            f"{len(VTAB_CLASS_NAMES)} of ADAM's VTAB benchmark")

    def _unpack(self, archive: Path) -> None:
        """Extract, then move the folder that holds ``train/`` and ``test/`` (at any depth) to ``vtab/``."""
        if (self.root / FOLDER).exists():
            raise UserError(f"VTAB: {self.root / FOLDER} is incomplete (it needs train/ and test/); delete it to "
                            f"extract {archive} again")
        tmp = self.root / ".vtab-extract"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            extract(archive, tmp)
            found = next((Path(d) for d, subdirs, _ in os.walk(tmp) if {"train", "test"} <= set(subdirs)), None)
            if found is None:
                raise UserError(f"VTAB: {archive} has no folder with train/ and test/; it is not ADAM's VTAB archive "
                                f"({GOOGLE_DRIVE}): delete it and download it again")
            os.replace(found, self.root / FOLDER)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def native_class_names(self):
        return list(VTAB_CLASS_NAMES)

    def load_split(self, split):
        if split not in self.SPLITS:
            raise ValueError(f"vtab has no split '{split}' (splits: train, test)")
        paths, labels = scan_class_folders(self.folder / split, self.classes)
        return FileImages(paths), torch.tensor(labels, dtype=torch.long)
