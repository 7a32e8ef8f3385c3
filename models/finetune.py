"""Continual fine-tuning of CLIP ("Continual-FT" of ZSCL, Zheng et al., ICCV 2023): the MTIL framework's
``--method finetune`` (``mtil/src/models/finetune.py``, run by ``mtil/scripts/finetune.sh``), task after task
with no memory and no regulariser. The lower bound of the ZSCL family, and its common machinery
(``models/utils/finetune_clip.py``, which documents every mode and parameter in detail).

Each task: ``--n_iters`` steps (ZSCL: 1000, with data cycled) of cross-entropy with label smoothing ``--ls`` (ZSCL's
scripts: 0.2) on ``s * cos(image, text)`` (s: CLIP's logit scale), where the text is each class's name in its task's
first template; AdamW (``--lr``, ZSCL 1e-5; betas 0.9/0.999; ``--optim_wd``, ZSCL 0), stepped every iteration by
ZSCL's ``cosine_lr`` (``--warmup_iters`` 100 linear warm-up steps, then cosine to 0 at the task's last step).
Evaluation scores every class with the current text encoder and all templates of the class's task, so
``--eval_future 1`` (MTIL's Transfer) works.

Options:
- ``--train_mode whole|image|text|image-fc|image-fc-fixed|fc`` (default whole): what trains. whole: both encoders;
  image: the image encoder (``visual.*``); text: the text encoder (``token_embedding``, ``positional_embedding``,
  ``transformer.*``, ``ln_final``, ``text_projection``); image-fc: the image encoder and a linear head (``head``)
  over normalised image features for all classes, initialised as s x the zero-shot classifier; image-fc-fixed: the
  image encoder under that head, frozen; fc: the head only. ``logit_scale`` never trains (s = its ``exp()``, 100
  for OpenAI's weights, or ``--logit_scale``).
- ``--ls`` label smoothing (default 0.0), ``--warmup_iters`` (default 100).
- the weight-space options, all off by default: ``--wise_merge [0.8] --wise_ft_model prev|zeroshot`` (WiSE-FT,
  ZSCL's ``WiSE_finetune.sh``), ``--we --avg_freq 100``, ``--we_wise [0.98]``, ``--moving_avg [0.999]
  --mv_avg_model n|t|zeroshot``, ``--l2 l`` (WC, ZSCL's ``wc.sh``: 1); ``models/utils/finetune_clip.py`` says
  exactly what each does.
- orthogonal gradients (the MTIL framework's): ``--orthogonal_gradients N`` (N + 1 gradient snapshots per task,
  their SVD basis at ``--ogd_energy`` 0.97, every later step's gradient projected off it),
  ``--orthogonal_gradients_path FILE`` (a basis file, e.g. from ``scripts/convert_grad_to_basis.py``);
  ``models/utils/orthogonal_gradients.py`` says exactly what each does.
- LoRA: ``--lora 1 --lora_r 8 --lora_alpha 16 --lora_dropout 0.1 --lora_target_modules attn mlp.c_fc mlp.c_proj``
  (peft for nn.Linear targets), ``--lora_shared 1 [--lora_shared_split_qkvo 1]`` (the framework's shared masters);
  ``models/utils/lora.py``.

The recipe of ``mtil/scripts/finetune.sh`` is ``models/config/finetune.yaml``'s ``mtil`` section
(``--model_config best``).

Deviations from the reference:
- Training classes on class-IL benchmarks: ZSCL's MTIL trains each task against its own classes only (and so
  does this method on task-IL sequences such as ``mtil``); on class-IL benchmarks (seq-synth, CIFAR) the loss
  ranks every class seen so far, as the other class-IL methods here do.
- ``--train_mode text`` trains the text encoder: ZSCL computed the text classifier once before the loop (under
  ``no_grad``, with every template, transposed), so its text mode had no gradient path to the text encoder
  (and a shape mismatch); here the first-template prompts are re-encoded with gradients every step, as in
  ``whole``.
- The fc modes are in the framework's README but not in ZSCL's ``finetune.py`` (its ``finetune_fc.py`` is dead
  code); the head is WiSE-FT's zero-shot ``ClassificationHead`` (normalised input, weight = logit scale x the
  template-ensemble classifier, zero bias), which ZSCL's ``modeling.py`` comes from.
- ZSCL runs ``iterations + 1`` steps, the last at lr 0 (no weight changes); ``--n_iters N`` runs N, the same
  weights.
- CLIP stays in eval mode while it trains (ZSCL's ``model.train()`` only changes BatchNorm statistics, of
  RN50-family backbones); no DataParallel; ``--precision`` autocast where ZSCL trains in fp32 (``--precision
  fp32`` matches it).
- The text tower's frozen modes (image, image-fc*) encode the training prompts once per task instead of every
  step (the same features).
- The weight-space options (``--wise_merge``, ``--we``, ``--we_wise``, ``--moving_avg``, ``--l2``; see
  ``models/utils/weight_space.py``) pair tensors by name and include buffers; ZSCL zips ``parameters()`` by
  position, which skips BatchNorm statistics and silently misaligns models of different structure (LoRA).
- ``--we``, ``--we_wise`` and ``--moving_avg`` given together are refused; ZSCL quietly runs one of them
  (moving average, else WE, else WE-WiSE) and with ``--moving_avg --we`` saves the anchor copy, not the trained model.
- With ``--we`` (or ``--we_wise``) and ``--wise_merge`` the merge applies to the ensemble, the model that is kept;
  ZSCL merges the training model and then saves the ensemble, so its merge is lost. The fork's ``training.py``
  always merges with zero-shot CLIP whatever ``--wise_ft_model`` says; here ``prev`` is the task's start.
- ``--orthogonal_gradients`` projects: the framework's tracker never did (its names came from ``model.module`` and
  its look-up from the DataParallel wrapper, so every projection was skipped), it projected the last collected
  gradient instead of the current one, and it concatenated the tasks' bases without re-orthonormalising them; here
  names are the unwrapped model's, the current gradient is projected, the stored rows stay orthonormal, and a basis
  file whose names are not tracked is refused instead of silently skipped. Frozen parameters are not tracked (the
  framework's hooks raised on them under LoRA). The SVD is exact (float64) instead of ``svd_lowrank``'s randomised
  one (the same at the framework's ``q = min(n, 20)``); snapshots are taken at N + 1 evenly spaced steps of the
  task's ``--n_iters`` (the framework's ``iteration % (T // N)`` over its T + 1 steps) and kept on the CPU.
- LoRA on attention works: CLIP's ``nn.MultiheadAttention`` reads ``in_proj_weight`` and ``out_proj.weight``
  directly, so the framework's peft LoRA on ``attn.out_proj`` never reached the output; peft 0.21.2's own
  ``lora.MultiheadAttention`` adds the output projection's delta twice in its forward pass (huggingface/peft PR
  3774), so attention targets are parametrized weights ``W + (alpha / r) B A`` here (peft's layout: one pair on the
  stacked q/k/v, one on o; no dropout, as peft's merged-weight attention has none), and nn.Linear targets go
  through peft. The default targets are ``attn mlp.c_fc mlp.c_proj``, not the framework's ``attn.out_proj
  mlp.c_fc mlp.c_proj`` (which works here too, o only).
- Shared LoRA shares what its README says (q, k, v and o of every attention block of a shape, one master per
  projection type with ``--lora_shared_split_qkvo``, MLP layers by (type, in, out)); the framework's
  ``lora_injection.py`` on loratorch only ever shared ``o`` and lost the attention weights when merging.
- With LoRA the weight-space options and ``--save_models`` act on the effective (merged) weights under open_clip's
  names; the framework zipped the LoRA factors by position (averaging A and B separately, and misaligned against a
  plain model). Each task trains fresh adapters (A drawn from the seed and the task, B = 0), folded into the weights
  at the task's end, as the framework's one process per task on the merged previous checkpoint did.
"""
from models.utils.finetune_clip import FinetuneClipModel


class Finetune(FinetuneClipModel):
    NAME = "finetune"
