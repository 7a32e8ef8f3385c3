"""FMoW (WILDS; Christie et al. 2018, Koh et al. 2021): satellite images of 62 land-use classes, through the real
``wilds`` loader (an optional dependency: ``pip install wilds``). Official splits: ``train``, and the OOD ``test``
(images from 2016 on) as the test set, as WiSE-FT's ``FMOWOOD``. Metrics (wilds' ``FMoWDataset.eval``): ``acc_avg``
and the worst-region accuracy ``acc_worst_region`` (the ``Other`` region left out, as wilds does), in percent.
Class names are wilds' categories as WiSE-FT prompts them (``airport_hangar``: its list, raw); templates WiSE-FT's
``fmow_template`` less its two ``satellite/aerial photo of <a or an> {}.`` entries, whose article depends on the
name (a format string cannot write it)."""
from __future__ import annotations

from datasets.utils.shift_sources import WildsSource

#: WiSE-FT's src/templates/fmow_template.py
FMOW_TEMPLATES = ("satellite photo of a {}.", "aerial photo of a {}.", "satellite photo of a {} in asia.",
                  "aerial photo of a {} in asia.", "satellite photo of a {} in africa.", "aerial photo of a {} in africa.",
                  "satellite photo of a {} in the americas.", "aerial photo of a {} in the americas.",
                  "satellite photo of a {} in europe.", "aerial photo of a {} in europe.",
                  "satellite photo of a {} in oceania.", "aerial photo of a {} in oceania.",
                  "a photo of a {}.", "{}.")


class FMoW(WildsSource):
    NAME = "fmow"
    TITLE = "FMoW"
    WILDS_NAME = "fmow"
    TEMPLATES = FMOW_TEMPLATES
    METRICS = {"acc_avg": "acc_avg", "acc_worst_region": "acc_worst_region"}

    def native_class_names(self):
        index = self.wilds.category_to_idx          # wilds' FMoWDataset: category -> label
        return sorted(index, key=index.get)
