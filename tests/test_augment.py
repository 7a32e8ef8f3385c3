import torch

from utils.augment import Normalize, RandomCropFlip


def test_crop_is_a_shift_of_the_padded_image():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8) + 1
    out = RandomCropFlip(padding=2, flip=False)(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(2):
        matches = [(dy, dx) for dy in range(5) for dx in range(5)
                   if torch.equal(padded[i, :, dy:dy + 8, dx:dx + 8], out[i])]
        assert len(matches) == 1


def test_flip_only_flips_some_images_and_is_seeded():
    x = torch.rand(64, 3, 8, 8)
    aug = RandomCropFlip(padding=0, flip=True)
    a = aug(x, torch.Generator().manual_seed(1))
    b = aug(x, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    flipped = torch.tensor([torch.equal(a[i], x[i].flip(2)) for i in range(64)])
    kept = torch.tensor([torch.equal(a[i], x[i]) for i in range(64)])
    assert bool((flipped | kept).all()) and 10 < int(flipped.sum()) < 54


def test_flip_with_padding_mirrors_the_crop():
    x = torch.rand(200, 1, 6, 6)
    out = RandomCropFlip(padding=1, flip=True)(x, torch.Generator().manual_seed(3))
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))
    n_flipped = 0
    for i in range(200):
        crops = [padded[i, :, dy:dy + 6, dx:dx + 6] for dy in range(3) for dx in range(3)]
        plain = any(torch.equal(c, out[i]) for c in crops)
        mirrored = any(torch.equal(c.flip(2), out[i]) for c in crops)
        assert plain or mirrored
        n_flipped += mirrored and not plain
    assert n_flipped > 50


def test_normalize():
    x = torch.ones(1, 3, 2, 2)
    out = Normalize((0.5, 0.5, 0.5), (0.25, 0.5, 1.0))(x)
    assert out[0, :, 0, 0].tolist() == [2.0, 1.0, 0.5]
