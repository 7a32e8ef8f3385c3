"""Options every run has, whatever the method and dataset (``python main.py --help`` lists them)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from utils.exemplar_selection import SELECTORS
from utils.optimizers import OPTIMIZERS
from utils.options import option


@dataclass
class RunOptions:
    # --- experiment -------------------------------------------------------------------------
    seed: int = option(0, "seed for every random choice: class order, data order, buffers, init", min=0,
                       max=2 ** 31 - 1)   # numpy's legacy seeds (1993 + --seed) take 32 bits
    class_order: str = option("native", "class order: 'native' (the dataset's), 'random' (permuted by --seed), "
                              "'seed1993' (the iCaRL/PyCIL order: numpy RandomState(1993)), 'seed1993_run' "
                              "(CLAP4CLIP's: RandomState(1993 + --seed), its run index; seed 0 = seed1993), 'zscl' "
                              "(ZSCL's class-incremental order: seq-cifar100, seq-tinyimagenet), or a path to a text "
                              "file of native class indices or names, one per line")
    n_epochs: int = option(1, "training epochs per task", min=0)
    n_iters: Optional[int] = option(None, "train exactly this many steps per task instead of --n_epochs "
                                    "(data is cycled)", min=1)
    batch_size: int = option(32, "training batch size", min=1)
    eval_batch_size: int = option(256, "evaluation batch size", min=1)
    eval_future: bool = option(False, "also evaluate on not-yet-seen tasks (methods that can predict "
                               "unseen classes, e.g. zero-shot CLIP)")
    compute_ece: bool = option(True, "after each task, record the expected calibration error (15 bins, L1) and "
                               "reliability-diagram bins over the whole seen test set (cheap: one number per image)")
    ece_per_batch: bool = option(False, "record CLAP4CLIP's ECE instead: the mean of per-batch ECEs over the seen "
                                 "tasks' evaluation batches (--eval_batch_size; biased upward for small batches)")
    eval_ood: bool = option(False, "after each task but the last, also score the future tasks' test images over the "
                            "seen classes and record novel-data detection (AUROC, AUPR, FPR95; costs an extra "
                            "pass over the future test sets)")
    stop_after: Optional[int] = option(None, "stop after this many tasks (the run can be continued with "
                                       "--resume)", min=1)
    debug_mode: bool = option(False, "train and evaluate on a few batches only, to smoke-test a setup")

    # --- optimisation -----------------------------------------------------------------------
    lr: float = option(0.1, "learning rate", min=0.0)
    optimizer: str = option("sgd", "optimizer", choices=OPTIMIZERS)
    optim_wd: float = option(0.0, "weight decay", min=0.0)
    optim_mom: float = option(0.0, "SGD momentum", min=0.0, max=1.0)
    optim_nesterov: bool = option(False, "Nesterov momentum (SGD)")
    lr_scheduler: str = option("none", "learning-rate schedule within each task",
                               choices=("none", "cosine", "multisteplr"))
    lr_milestones: list[int] = option([], "epochs (or iterations with --scheduler_mode iter) at which "
                                      "multisteplr multiplies the lr by --sched_gamma")
    sched_gamma: float = option(0.1, "multisteplr decay factor", min=0.0)
    scheduler_mode: str = option("epoch", "step the scheduler after every epoch or every iteration",
                                 choices=("epoch", "iter"))

    # --- rehearsal memory -------------------------------------------------------------------
    buffer_size: int = option(0, "total rehearsal memory (items); 0 = no memory", min=0)
    buffer_per_class: Optional[int] = option(None, "fixed exemplars per class instead of a fixed total "
                                             "(class-balanced memory)", min=1)
    buffer_mode: str = option("reservoir", "how the memory is filled: reservoir sampling over the stream, or "
                              "class-balanced selection at the end of each task with --exemplar_selector",
                              choices=("reservoir", "balanced"))
    exemplar_selector: str = option("random", "exemplar selection for class-balanced memories",
                                    choices=SELECTORS)
    herding_on: str = option("auto", "what herding runs on: L2-normalised image features, or the L2-normalised "
                             "(Monte-Carlo mean) logits as CLAP4CLIP's selector; auto = the method's reference "
                             "(logits for clap4clip and clip-adapter, features elsewhere)",
                             choices=("auto", "features", "logits"))
    rescore_memory: Optional[bool] = option(None, "when a class-balanced memory shrinks, re-select each old class's "
                                            "exemplars among its stored ones with the current model and "
                                            "--exemplar_selector (CLAP4CLIP) instead of keeping the prefix of their "
                                            "first ranking (mammoth, iCaRL); default: the method's reference (on for "
                                            "clap4clip and clip-adapter, off elsewhere)")
    selector_keep: str = option("default", "which end of the selector's score to keep: the selector's "
                                "documented default, the highest or the lowest scores",
                                choices=("default", "high", "low"))
    buffer_storage: str = option("tensor", "what the memory stores: the images, or their indices in the dataset "
                                 "(images are re-read when replayed; saves memory on large images)",
                                 choices=("tensor", "index"))
    minibatch_size: Optional[int] = option(None, "replay batch size drawn from the memory "
                                           "(default: --batch_size)", min=1)

    # --- frozen encoders and precision -------------------------------------------------------
    feature_cache: str = option("auto", "cache of frozen-encoder features: 'auto' ($TUSK_CACHE_DIR, else "
                                "~/.cache/tusk), a directory, or 'off' (encode every batch, every epoch)")
    feature_views: int = option(0, "augmented views per training image to encode and cache; each step draws one "
                                "(0 = the deterministic test transform only)", min=0, max=1000)
    precision: str = option("auto", "autocast precision: fp32, bf16, fp16 (with a grad scaler) or auto "
                            "(bf16 on GPUs that support it, fp32 on CPU)", choices=("auto", "fp32", "bf16", "fp16"))

    # --- model files and evaluation modes (the MTIL framework's) -----------------------------
    save_models: bool = option(False, "after each task, export the model as a plain state_dict next to results.json "
                               "(model_task<NN>[_<dataset>].pt; CLIP methods: the open_clip CLIP's state_dict)")
    load: Optional[str] = option(None, "start from this model file: a --save_models export, an open_clip checkpoint "
                                 "(state_dict, {'state_dict': ...}, .safetensors) or an OpenAI CLIP .pt (TorchScript, "
                                 "read without running its code); keys and shapes must match --backbone")
    eval_only: bool = option(False, "train nothing: evaluate --load (default: the backbone's --pretrained weights) on "
                             "--eval_datasets (or classify --eval_single)")
    eval_datasets: list[str] = option([], "datasets to evaluate on their test sets, comma- or space-separated: with "
                                      "--eval_only, or during training (zero-shot CLIP and the ZSCL family) as extra "
                                      "columns after every task, never trained: benchmark names (synth-mtil, mtil, "
                                      "imagenet, imagenet-a, imagenet-r, imagenet-sketch, imagenet-v2, objectnet, "
                                      "ytbb-robust, imagenet-vid-robust, fmow, iwildcam, ...) or one dataset of mtil "
                                      "(DTD, CIFAR100, ...) or synth-mtil (shapes, icons, ...)")
    eval_single: Optional[str] = option(None, "with --eval_only and --load: classify this image file among "
                                        "--class_names and print the top-5 classes")
    class_names: Optional[str] = option(None, "for --eval_single: a text file, one class name per line, each "
                                        "prompted as 'a photo of a {}.'")
    eval_interval: Optional[int] = option(None, "while training, every N iterations evaluate the current task's "
                                          "test set and append 'iteration,top1,top5' to metrics_<task>.csv in the "
                                          "run directory", min=1)

    # --- management -------------------------------------------------------------------------
    data_path: str = option("data", "where datasets are stored / downloaded")
    download: bool = option(True, "download missing datasets (each is verified against its checksum)")
    verify_data: bool = option(True, "verify local dataset files against their checksums; 0 uses files that differ "
                               "(re-packed or subset data) with a warning")
    results_path: str = option("results", "each run writes a new directory below this path")
    device: str = option("auto", "torch device: auto (cuda if available), cpu, cuda, cuda:N, mps")
    num_workers: int = option(2, "DataLoader workers for datasets read from files", min=0)
    checkpoint: bool = option(True, "save a checkpoint after every task (needed by --resume)")
    quiet: bool = option(False, "no progress bars or per-task lines (the final summary table is still printed)")
    notes: str = option("", "free text stored with the run's config")
    logger: str = option("none", "also send per-step losses, per-task accuracies and the final metrics to TensorBoard "
                         "(<run_dir>/tensorboard/) or Weights & Biases (optional packages)",
                         choices=("none", "tensorboard", "wandb"))
    wandb_project: str = option("tusk", "the W&B project of --logger wandb")
    wandb_mode: str = option("online", "--logger wandb: online, or offline (files in <run_dir>/wandb/, uploaded "
                             "later with wandb sync)", choices=("online", "offline"))
