"""Reference data for distillation (datasets/reference.py): synthetic pretraining images and captions, an
ImageNet train folder and a Conceptual Captions validation TSV written here in their native layouts, the
'random' virtual vocabulary, one-line errors for missing files and unknown names. Nothing touches the network."""
import shutil
import socket

import pytest
import torch
from open_clip.tokenizer import SimpleTokenizer

from datasets import reference
from datasets.reference import (BPE_EOT, BPE_SOT, CC_VALIDATION_TSV, REFERENCE_IMAGES, REFERENCE_SENTENCES,
                                create_reference_images, create_reference_sentences, synth_pretrain_images)
from datasets.utils.synthetic_world import DOMAINS, SyntheticWorld
from fakes.imagenet_family import IMAGENET_WNIDS, write_imagenet
from utils.errors import UserError

WORLD = SyntheticWorld(0)
PRETRAIN, BENCHMARK = set(WORLD.pretrain_concepts()), set(WORLD.benchmark_concepts())


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("reference data must not touch the network")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def one_line_error(match, fn, *args, **kwargs) -> str:
    with pytest.raises(UserError, match=match) as err:
        fn(*args, **kwargs)
    assert "\n" not in str(err.value)
    return str(err.value)


# ---- synth-pretrain --------------------------------------------------------------------------------------
def test_synth_pretrain_images_are_pretraining_concepts_only_and_deterministic():
    assert PRETRAIN and not PRETRAIN & BENCHMARK
    images, concepts = synth_pretrain_images(450, seed=3)
    assert images.shape == (450, 3, 32, 32) and images.dtype == torch.uint8
    assert set(concepts.tolist()) == PRETRAIN                      # every pretraining concept, no benchmark one
    counts = torch.bincount(concepts)[sorted(PRETRAIN)]
    assert counts.min() == 1 and counts.max() == 2 and int(counts.sum()) == 450   # balanced over concepts
    # the images are the world's own renders of those concepts
    full, _, _ = SyntheticWorld(3).make_split(WORLD.pretrain_concepts(), 2, "reference")
    two = torch.nonzero(counts == 2).flatten()
    assert torch.equal(images[concepts == sorted(PRETRAIN)[int(two[0])]], full[2 * int(two[0]):2 * int(two[0]) + 2])

    again, same = synth_pretrain_images(450, seed=3)
    assert torch.equal(again, images) and torch.equal(same, concepts)
    other, _ = synth_pretrain_images(450, seed=4)
    assert not torch.equal(other, images)

    ref = create_reference_images("synth-pretrain", n=300, seed=3)
    assert len(ref) == 300 and ref.describe() == create_reference_images("synth-pretrain", n=300, seed=3).describe()
    assert ref.describe()["name"] == "synth-pretrain" and ref.describe()["n"] == 300
    assert ref.describe() != create_reference_images("synth-pretrain", n=300, seed=4).describe()


def test_reference_image_batches_in_order_shuffled_and_streamed():
    ref = create_reference_images("synth-pretrain", n=300, seed=0)
    images, _ = synth_pretrain_images(300, seed=0)
    batches = list(ref.batches(128))
    assert [b.images.shape[0] for b in batches] == [128, 128, 44]
    assert torch.equal(torch.cat([b.indexes for b in batches]), torch.arange(300))
    x = torch.cat([b.images for b in batches])
    assert x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1 and torch.equal(x, images.float() / 255)

    shuffled = list(ref.batches(128, torch.Generator().manual_seed(1)))
    order = torch.cat([b.indexes for b in shuffled])
    assert sorted(order.tolist()) == list(range(300)) and not torch.equal(order, torch.arange(300))
    assert torch.equal(shuffled[0].images, images[shuffled[0].indexes].float() / 255)
    repeat = next(ref.batches(128, torch.Generator().manual_seed(1)))
    assert torch.equal(repeat.indexes, shuffled[0].indexes)

    stream = ref.stream(128, torch.Generator().manual_seed(2))
    seen = [next(stream).indexes.numel() for _ in range(5)]        # past the end of one pass: reshuffled
    assert seen == [128, 128, 44, 128, 128]


# ---- imagenet --------------------------------------------------------------------------------------------
def test_imagenet_reference_images_from_a_train_folder(tmp_path):
    write_imagenet(tmp_path / "a", IMAGENET_WNIDS[:3], per_class_train=2, per_class_val=1)
    ref = create_reference_images("imagenet", tmp_path / "a", num_workers=0)
    assert len(ref) == 6 and ref.describe()["n"] == 6                 # by default the whole train folder (ZSCL)
    assert all("/imagenet/train/" in p for p in ref.images.paths)
    batch = next(ref.batches(4, size=16))
    assert batch.images.shape == (4, 3, 16, 16) and batch.indexes.tolist() == [0, 1, 2, 3]
    assert 0 <= batch.images.min() and batch.images.max() <= 1
    assert next(ref.batches(2)).images.shape == (2, 3, 224, 224)       # default size: image_size

    some = create_reference_images("imagenet", tmp_path / "a", n=4, seed=1, num_workers=0)
    assert len(some) == 4 and set(some.images.paths) < set(ref.images.paths)
    assert some.images.paths == create_reference_images("imagenet", tmp_path / "a", n=4, seed=1).images.paths
    shutil.copytree(tmp_path / "a", tmp_path / "b")                    # the cache key survives a moved folder
    assert create_reference_images("imagenet", tmp_path / "b", n=4, seed=1).describe() == some.describe()

    one_line_error(r"imagenet/train' is missing.*<wnid> class folders.*image-net.org", create_reference_images,
                   "imagenet", tmp_path / "empty")
    one_line_error("asked for 7, but .* has 6", create_reference_images, "imagenet", tmp_path / "a", n=7)


# ---- synth-captions --------------------------------------------------------------------------------------
def benchmark_names():
    return [WORLD.concepts[c].name for c in BENCHMARK]


def check_synth_captions(captions):
    assert len(captions) == len(set(captions)) > 0
    text = "\n".join(captions)
    assert not [name for name in benchmark_names() if name in text]        # no benchmark concept is named
    for c in WORLD.pretrain_concepts():                                     # every pretraining concept is
        assert f" {WORLD.concepts[c].name}" in text
    generator = torch.Generator().manual_seed(0)                            # and caption() writes nothing else
    concepts = sorted(PRETRAIN)
    for _ in range(300):
        c = concepts[int(torch.randint(len(concepts), (1,), generator=generator))]
        d = int(torch.randint(len(DOMAINS), (1,), generator=generator))
        assert WORLD.caption(c, d, generator) in set(captions)


def test_synth_captions_name_pretraining_concepts_only_and_are_deterministic():
    refs = create_reference_sentences("synth-captions")
    captions = list(refs.texts)
    check_synth_captions(captions)
    assert captions == list(create_reference_sentences("synth-captions").texts)
    assert refs.describe() == create_reference_sentences("synth-captions").describe()
    assert captions == WORLD.pretraining_captions()                        # the world's own list is used
    some = create_reference_sentences("synth-captions", n=50, seed=2)
    assert len(some) == 50 and set(some.texts) <= set(captions)
    assert some.texts == create_reference_sentences("synth-captions", n=50, seed=2).texts
    assert some.texts != create_reference_sentences("synth-captions", n=50, seed=3).texts
    tokens = refs.tokens(SimpleTokenizer(context_length=16))
    assert tokens.shape == (len(captions), 16) and (tokens[:, 0] == BPE_SOT).all()


# ---- conceptual_captions ---------------------------------------------------------------------------------
CC_LINES = ("a dog runs on the beach\thttp://x/1.jpg\n\nred car parked outside\thttp://x/2.jpg\n"
            "   \n\"quoted\" caption, with a comma\thttp://x/3.jpg\nlast one without url\n")
CC_CAPTIONS = ["a dog runs on the beach", "red car parked outside", "\"quoted\" caption, with a comma",
               "last one without url"]


def test_conceptual_captions_read_straight_from_the_validation_tsv(tmp_path):
    folder = tmp_path / "conceptual_captions"
    folder.mkdir()
    (folder / CC_VALIDATION_TSV).write_text(CC_LINES)
    refs = create_reference_sentences("conceptual_captions", tmp_path)
    assert list(refs.texts) == CC_CAPTIONS and refs.token_ids is None     # first column, empty lines skipped
    two = create_reference_sentences("conceptual_captions", tmp_path, n=2, seed=4)
    assert len(two) == 2 and set(two.texts) < set(CC_CAPTIONS)
    assert two.texts == create_reference_sentences("conceptual_captions", tmp_path, n=2, seed=4).texts
    assert refs.tokens(SimpleTokenizer(context_length=16)).shape == (4, 16)

    by_path = create_reference_sentences(str(folder / CC_VALIDATION_TSV))  # a file path as the name
    assert list(by_path.texts) == CC_CAPTIONS
    output_csv = tmp_path / "Validation_GCC-1.1.0-Validation_output.csv"  # ZSCL's downloader output
    output_csv.write_text("filepath\ttitle\nval/0.jpg\ta dog runs on the beach\nval/2.jpg\ta cup of coffee\n")
    assert list(create_reference_sentences(str(output_csv)).texts) == ["a dog runs on the beach", "a cup of coffee"]


def test_conceptual_captions_missing_files_are_one_line_errors(tmp_path):
    layout = r"conceptual_captions/Validation_GCC-1.1.0-Validation.tsv.*ai.google.com/research/ConceptualCaptions"
    one_line_error(r"conceptual_captions' is missing.*" + layout, create_reference_sentences,
                   "conceptual_captions", tmp_path)
    (tmp_path / "conceptual_captions").mkdir()
    (tmp_path / "conceptual_captions" / "Train_GCC-training.tsv").write_text("x\thttp://x\n")
    message = one_line_error(layout, create_reference_sentences, "conceptual_captions", tmp_path)
    assert "Train_GCC-training.tsv" in message                             # says what the folder has instead
    one_line_error(r"nothere.tsv' is missing.*ConceptualCaptions", create_reference_sentences,
                   str(tmp_path / "nothere.tsv"))
    (tmp_path / "empty.tsv").write_text("\n\n")
    one_line_error("has no captions", create_reference_sentences, str(tmp_path / "empty.tsv"))


# ---- random ----------------------------------------------------------------------------------------------
def test_random_sentences_are_1000_seeded_sequences_of_10_tokens():
    refs = create_reference_sentences("random", seed=5)
    ids = refs.token_ids
    assert refs.texts is None and ids.shape == (1000, 10) and ids.dtype == torch.long and len(refs) == 1000
    assert 0 <= ids.min() and ids.max() < BPE_SOT                           # no special token inside
    assert torch.equal(ids, create_reference_sentences("random", seed=5).token_ids)
    assert not torch.equal(ids, create_reference_sentences("random", seed=6).token_ids)
    assert create_reference_sentences("random", n=7).token_ids.shape == (7, 10)

    tokens = refs.tokens(SimpleTokenizer(context_length=16))               # micro-clip's context
    assert tokens.shape == (1000, 16)
    assert (tokens[:, 0] == BPE_SOT).all() and torch.equal(tokens[:, 1:11], ids) and (tokens[:, 11] == BPE_EOT).all()
    assert (tokens[:, 12:] == 0).all() and (tokens.argmax(-1) == 11).all()  # CLIP reads the feature at <end>
    assert refs.tokens(SimpleTokenizer()).shape == (1000, 77)              # ZSCL's framing at CLIP's context
    one_line_error("do not fit this tokenizer", refs.tokens, SimpleTokenizer(context_length=11))
    one_line_error("need open_clip's CLIP tokenizer", refs.tokens, lambda texts: torch.zeros(len(texts), 77))


# ---- the registry ----------------------------------------------------------------------------------------
def test_registry_lists_names_and_unknown_names_say_the_closest():
    shift_sets = {"imagenet-a", "imagenet-r", "imagenet-sketch", "imagenet-v2", "objectnet", "imagenet-vid-robust",
                  "ytbb-robust", "fmow", "iwildcam"}          # the distribution-shift sets (datasets/distribution_shifts.py)
    assert set(REFERENCE_IMAGES) == {"synth-pretrain", "imagenet", "conceptual_captions", *shift_sets}
    assert set(REFERENCE_SENTENCES) == {"synth-captions", "conceptual_captions", "random"}
    message = one_line_error("unknown reference image set 'imagenett'", create_reference_images, "imagenett")
    assert "Did you mean 'imagenet'?" in message and "conceptual_captions, fmow, imagenet, imagenet-a" in message
    message = one_line_error("unknown reference sentence set 'synth-caption'", create_reference_sentences,
                             "synth-caption")
    assert "Did you mean 'synth-captions'?" in message and "conceptual_captions, random, synth-captions" in message
    assert reference.__doc__ and all(name in reference.__doc__ for name in [*REFERENCE_IMAGES, *REFERENCE_SENTENCES])
