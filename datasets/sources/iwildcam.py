"""iWildCam (WILDS; Beery et al. 2021, Koh et al. 2021): camera-trap images of 182 animal classes, through the real
``wilds`` loader (an optional dependency: ``pip install wilds``). Official splits: ``train``, and the OOD ``test``
(unseen camera traps) as the test set, as WiSE-FT's ``IWildCamOOD``. Metrics (wilds' ``IWildCamDataset.eval``):
``acc_avg``, ``recall_macro`` and the headline macro F1 ``f1_macro``, in percent. Class names are WiSE-FT's English
names (``src/datasets/iwildcam_metadata/labels.csv``: the ``english`` column of the rows with ``y < 99999``, in
``y`` order, lower case), which wilds does not ship: copy that file to ``<data_path>/iwildcam_metadata/labels.csv``.
Templates: WiSE-FT's ``iwildcam_template``."""
from __future__ import annotations

import csv

from datasets.utils.shift_sources import WildsSource
from utils.errors import UserError

LABELS = "iwildcam_metadata/labels.csv"


class IWildCam(WildsSource):
    NAME = "iwildcam"
    TITLE = "iWildCam"
    WILDS_NAME = "iwildcam"
    TEMPLATES = ("a photo of {}.", "{} in the wild.")
    METRICS = {"acc_avg": "acc_avg", "recall-macro_all": "recall_macro", "F1-macro_all": "f1_macro"}

    def native_class_names(self):
        path = self.root / LABELS
        if not path.is_file():
            raise UserError(f"iWildCam: '{path}' (the class names) is missing: copy src/datasets/{LABELS} of "
                            f"https://github.com/mlfoundations/wise-ft there")
        with open(path, newline="", encoding="utf-8") as fh:
            rows = [r for r in csv.DictReader(fh) if int(r["y"]) < 99999]
        return [r["english"].lower() for r in sorted(rows, key=lambda r: int(r["y"]))]
