"""ImageNet-V2 matched-frequency (Recht et al. 2019): 10,000 new images of the 1000 ImageNet classes, test only,
from ``imagenetv2-matched-frequency.tar.gz`` (``imagenetv2-matched-frequency-format-val/<label>/*.jpeg``, the
folders being ImageNet label numbers 0..999, as ``imagenetv2_pytorch`` reads them for WiSE-FT). The authors
publish no checksum; the archive is checked by its image and class counts."""
from __future__ import annotations

from datasets.utils.download import Remote
from datasets.utils.shift_sources import ImageNetFolders

IMAGENET_V2 = Remote("https://huggingface.co/datasets/vaishaal/ImageNetV2/resolve/main/"
                     "imagenetv2-matched-frequency.tar.gz", "imagenetv2-matched-frequency.tar.gz", None)


class ImageNetV2(ImageNetFolders):
    NAME = "imagenet_v2"
    TITLE = "ImageNet-V2"
    FOLDER = "imagenetv2-matched-frequency-format-val"
    REMOTE = IMAGENET_V2
    N_CLASSES = 1000
    N_IMAGES = 10_000
    FOLDERS_ARE_LABELS = True
    HOW = (f"Run without --download 0 to fetch {IMAGENET_V2.url} (the authors' S3 copy: "
           f"https://imagenetv2public.s3-us-west-2.amazonaws.com/imagenetv2-matched-frequency.tar.gz), or point "
           f"--data_path at a folder that contains imagenetv2-matched-frequency-format-val/")
