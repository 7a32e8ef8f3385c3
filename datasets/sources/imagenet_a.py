"""ImageNet-A (Hendrycks et al. 2021, natural adversarial examples): 7,500 images of 200 ImageNet classes, test
only, from ``imagenet-a.tar`` (md5 checked; ``imagenet-a/<wnid>/*.jpg``). Labels in sorted-wnid order, which is
WiSE-FT's ``CLASS_SUBLIST`` order; CLIP's curated ImageNet names and 80 templates."""
from __future__ import annotations

from datasets.utils.download import Remote
from datasets.utils.shift_sources import ImageNetFolders

IMAGENET_A = Remote("https://people.eecs.berkeley.edu/~hendrycks/imagenet-a.tar", "imagenet-a.tar",
                    "md5:c3e55429088dc681f30d81f4726b6595")


class ImageNetA(ImageNetFolders):
    NAME = "imagenet_a"
    TITLE = "ImageNet-A"
    FOLDER = "imagenet-a"
    REMOTE = IMAGENET_A
    N_CLASSES = 200
    N_IMAGES = 7_500
    HOW = (f"Run without --download 0 to fetch {IMAGENET_A.url}, or point --data_path at a folder that "
           f"contains imagenet-a/")
