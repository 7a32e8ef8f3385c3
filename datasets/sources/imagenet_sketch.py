"""ImageNet-Sketch (Wang et al. 2019): 50,889 black-and-white sketches of the 1000 ImageNet classes, test only, from
``ImageNet-Sketch.zip`` (``sketch/<wnid>/*.JPEG``, WiSE-FT's folder). The authors publish it on Google Drive and
Kaggle without a checksum; the copy here is the Hugging Face mirror of the authors' zip (songweig/imagenet_sketch),
so the download is checked by its image and class counts only."""
from __future__ import annotations

from datasets.utils.download import Remote
from datasets.utils.shift_sources import ImageNetFolders

IMAGENET_SKETCH = Remote("https://huggingface.co/datasets/songweig/imagenet_sketch/resolve/main/data/"
                         "ImageNet-Sketch.zip", "ImageNet-Sketch.zip", None)


class ImageNetSketch(ImageNetFolders):
    NAME = "imagenet_sketch"
    TITLE = "ImageNet-Sketch"
    FOLDER = "sketch"
    REMOTE = IMAGENET_SKETCH
    N_CLASSES = 1000
    N_IMAGES = 50_889
    HOW = (f"Run without --download 0 to fetch {IMAGENET_SKETCH.url} (or download it from "
           f"https://github.com/HaohanWang/ImageNet-Sketch), or point --data_path at a folder that contains sketch/")
