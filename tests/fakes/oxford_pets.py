"""Tiny Oxford-IIIT Pet in torchvision's layout (``oxford-iiit-pet/images/<id>.jpg``,
``oxford-iiit-pet/annotations/{trainval,test}.txt``)."""
from __future__ import annotations

from pathlib import Path

from fakes.image_tree import write_label_image

#: The 37 breeds in class-id order (cats capitalised, as in the real image names).
BREEDS = ("Abyssinian", "american_bulldog", "american_pit_bull_terrier", "basset_hound", "beagle", "Bengal", "Birman",
          "Bombay", "boxer", "British_Shorthair", "chihuahua", "Egyptian_Mau", "english_cocker_spaniel",
          "english_setter", "german_shorthaired", "great_pyrenees", "havanese", "japanese_chin", "keeshond",
          "leonberger", "Maine_Coon", "miniature_pinscher", "newfoundland", "Persian", "pomeranian", "pug", "Ragdoll",
          "Russian_Blue", "saint_bernard", "samoyed", "scottish_terrier", "shiba_inu", "Siamese", "Sphynx",
          "staffordshire_bull_terrier", "wheaten_terrier", "yorkshire_terrier")


def write_oxford_pets(root: Path, per_split: int = 1) -> Path:
    base = root / "oxford-iiit-pet"
    (base / "annotations").mkdir(parents=True)
    for s, (split, file) in enumerate((("train", "trainval.txt"), ("test", "test.txt"))):
        rows = []
        for label, breed in enumerate(BREEDS):
            for i in range(per_split):
                image_id = f"{breed}_{100 * (s + 1) + i}"
                write_label_image(base / "images" / f"{image_id}.jpg", label)
                rows.append(f"{image_id} {label + 1} {1 if breed[0].isupper() else 2} {i + 1}")
        (base / "annotations" / file).write_text("\n".join(rows) + "\n")
    return base
