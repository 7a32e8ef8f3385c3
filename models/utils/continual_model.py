"""``ContinualModel``: the small contract every method implements, and the bookkeeping it inherits.

A method is one file in ``models/`` with a subclass that sets ``NAME`` and implements
:meth:`ContinualModel.observe` (or sets ``TRAINS_ON_STREAM = False``). Optional hooks: ``begin_task``,
``end_task``, ``begin_epoch``, ``end_epoch``, ``forward``, ``forward_samples``, ``get_parameters``,
``get_optimizer``, ``get_scheduler``, ``selection_outputs``, ``training_data`` (:data:`HOOKS`).
Its options are a dataclass named ``Options`` (fields made with ``utils.options.option``): they become
``--flags`` and arrive typed as ``self.opts``. ``DEFAULTS`` overrides run options for this method.

The contract is checked when a subclass is created (:meth:`ContinualModel.__init_subclass__`): a hook with
a signature the loop cannot call and an ``Options`` that is not a dataclass or reuses a run option's name
raise a one-line ``UserError`` naming the file; a public method whose name is close to a hook's warns.

The task loop calls only the ``meta_*`` methods; they keep the counters, rebuild the optimizer and
scheduler after ``begin_task`` (so parameters added there are trained), fill class-balanced memories
before ``end_task`` (run under the precision's autocast), and pass ``observe`` only the batch fields its
signature names. Checkpoints hold the module's ``state_dict`` and also the tensors a method keeps in public
plain attributes (:meth:`ContinualModel.checkpoint_state`).
"""
from __future__ import annotations

import collections
import dataclasses
import difflib
import inspect
import sys
import warnings
from pathlib import Path
from typing import Any, ClassVar, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from utils.buffer import ClassBalancedBuffer, ReservoirBuffer
from utils.errors import UserError
from utils.exemplar_selection import rank_exemplars
from utils.optimizers import make_optimizer
from utils.options import NoOptions
from utils.precision import autocast, grad_scaler, resolve_precision
from utils.run_options import RunOptions

#: The hooks the task loop (and evaluation, exemplar selection) calls, with the positional arguments it passes.
HOOKS: dict[str, tuple[str, ...]] = {
    "begin_task": ("dataset",), "end_task": ("dataset",),
    "begin_epoch": ("epoch", "dataset"), "end_epoch": ("epoch", "dataset"),
    "forward": ("x",), "forward_samples": ("x",), "selection_outputs": ("inputs",), "training_data": ("data",),
    "get_parameters": (), "get_optimizer": (), "get_scheduler": ("steps_per_epoch", "n_epochs"),
}
#: The batch fields ``observe`` may name (it receives them by name), and ``epoch``.
OBSERVE_FIELDS = ("inputs", "labels", "not_aug_inputs", "indexes", "epoch")
_REPO_ROOT = Path(__file__).resolve().parents[2]


class MethodContractWarning(UserWarning):
    """A method file that probably does not do what its author meant (e.g. a misspelt hook name)."""


def method_file(cls: type) -> str:
    """Where ``cls`` is defined, as a path relative to the repository (``models/ewc_on.py``) when it is inside."""
    module = sys.modules.get(cls.__module__)
    path = getattr(module, "__file__", None)
    if not path:
        return cls.__module__
    try:
        return Path(path).resolve().relative_to(_REPO_ROOT).as_posix()
    except ValueError:
        return str(path)


def _check_contract(cls: type) -> None:
    """One-line ``UserError`` for a method class the loop cannot drive; a warning for a likely misspelt hook."""
    where = f"{method_file(cls)}: {cls.__qualname__}"
    for name, passed in HOOKS.items():
        func = cls.__dict__.get(name)
        if not inspect.isfunction(func):
            continue
        try:
            inspect.signature(func).bind(None, *passed)
        except TypeError:
            raise UserError(f"{where}.{name}{inspect.signature(func)} cannot be called as the loop calls it, "
                            f"{name}({', '.join(passed)}): define it as def {name}(self"
                            f"{''.join(', ' + p for p in passed)})") from None
    observe = cls.__dict__.get("observe")
    if inspect.isfunction(observe):
        params = list(inspect.signature(observe).parameters.values())[1:]
        unknown = [p.name for p in params if p.name not in OBSERVE_FIELDS and p.default is inspect.Parameter.empty
                   and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)]
        if unknown:
            raise UserError(f"{where}.observe{inspect.signature(observe)}: observe receives the batch by field name; "
                            f"'{unknown[0]}' is not one: name its parameters among {', '.join(OBSERVE_FIELDS)}")
    options = cls.__dict__.get("Options")
    if options is not None:
        if not (isinstance(options, type) and dataclasses.is_dataclass(options)):
            raise UserError(f"{where}.Options ({getattr(options, '__qualname__', options)}) is not a dataclass: "
                            f"decorate it with @dataclass and make its fields with utils.options.option(...)")
        run_names = {f.name for f in dataclasses.fields(RunOptions)}
        for f in dataclasses.fields(options):
            if f.name in run_names:
                raise UserError(f"{where}.Options: option --{f.name} of {options.__qualname__} clashes with the run "
                                f"option --{f.name}: rename it (e.g. --{cls.NAME.replace('-', '_') or 'method'}_{f.name}), "
                                f"or set the run option's default for this method in DEFAULTS = "
                                f"{{'{f.name}': ...}}")
    known = set(HOOKS) | {"observe"}
    for name, value in cls.__dict__.items():
        if name.startswith("_") or name in known or not inspect.isfunction(value):
            continue
        if any(hasattr(base, name) for base in cls.__mro__[1:]):
            continue                                         # overrides something that exists: not a typo
        close = [k for k in difflib.get_close_matches(name, sorted(known), n=3, cutoff=0.8)
                 if abs(len(k) - len(name)) <= 2]                  # a typo, not a longer helper name
        if close:
            warnings.warn(f"{where}.{name} is not a hook, so the loop never calls it: did you mean {close[0]}? "
                          f"(rename it, or start its name with _ if it is a helper)", MethodContractWarning,
                          stacklevel=3)


def _holds_tensor(value: Any) -> bool:
    if isinstance(value, Tensor):
        return True
    if isinstance(value, (list, tuple, set, frozenset, collections.deque)):
        return any(_holds_tensor(v) for v in value)
    if isinstance(value, dict):
        return any(_holds_tensor(v) for v in value.values())
    return False


def _checkpointable(value: Any) -> bool:
    """Whether ``value`` survives ``torch.save`` / ``torch.load(weights_only=True)`` as what it is."""
    if value is None or isinstance(value, (Tensor, bool, int, float, str)):
        return True
    if type(value) in (list, tuple):
        return all(_checkpointable(v) for v in value)
    if type(value) is dict:
        return all(isinstance(k, (str, int)) and _checkpointable(v) for k, v in value.items())
    return False


class ContinualModel(nn.Module):
    NAME: ClassVar[str] = ""
    COMPATIBILITY: ClassVar[tuple[str, ...]] = ("class-il", "task-il")
    Options: ClassVar[type] = NoOptions
    DEFAULTS: ClassVar[dict[str, Any]] = {}
    #: Rehearsal methods need --buffer_size or --buffer_per_class.
    REQUIRES_BUFFER: ClassVar[bool] = False
    #: Methods whose ``forward`` can score classes of tasks not trained yet (``--eval_future``).
    CAN_PREDICT_FUTURE: ClassVar[bool] = False
    #: Train on the union of every task seen so far instead of the current task only (joint).
    TRAIN_ON_ALL_SEEN_TASKS: ClassVar[bool] = False
    #: Methods that work with or without a memory (a memory is built when a size is given).
    SUPPORTS_BUFFER: ClassVar[bool] = False
    #: What herding runs on by default (``--herding_on auto``): "features", or "logits" (CLAP4CLIP's selector).
    HERDING_ON: ClassVar[str] = "features"
    #: Whether old classes' exemplars are re-scored when the memory shrinks (``--rescore_memory`` unset).
    RESCORES_MEMORY: ClassVar[bool] = False
    #: False for methods that do not train on the stream (GDumb): the loop then runs no epochs and never calls
    #: ``observe``; the method does its work in ``end_task`` (``dataset.task_data(self.current_task, "train")``).
    TRAINS_ON_STREAM: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        _check_contract(cls)

    def __init__(self, backbone: nn.Module, dataset, args: RunOptions, options: Any = None,
                 device: torch.device | str = "cpu"):
        super().__init__()
        self.net = backbone
        self.args = args
        self.opts = options if options is not None else self.Options()
        self.device = torch.device(device)
        self.dataset = dataset
        self.n_classes: int = dataset.n_classes
        self.n_tasks: int = dataset.N_TASKS
        self.loss = F.cross_entropy
        self._augment = dataset.train_augmentation()
        self._normalize = dataset.normalize
        self._current_task = 0
        #: The method's own randomness (replay sampling and augmentation); saved in checkpoints.
        self.generator = torch.Generator().manual_seed(args.seed + 1)
        self.buffer: ReservoirBuffer | ClassBalancedBuffer | None = None
        wants_memory = bool(args.buffer_size or args.buffer_per_class)
        if self.REQUIRES_BUFFER or (self.SUPPORTS_BUFFER and wants_memory):
            self.buffer = self.make_buffer()
        elif wants_memory:
            raise UserError(f"model '{self.NAME}' does not use a memory: drop --buffer_size/--buffer_per_class")
        self.precision = resolve_precision(args.precision, self.device)
        self.scaler = grad_scaler(self.precision, self.device)
        self.minibatch_size = args.minibatch_size or args.batch_size
        self._batch_indexes: Tensor | None = None
        #: Under DDP, the items of the stream step in progress (``utils.distributed.StepShard``), else None.
        self._ddp_step = None
        #: The task loop's record of SIGINT/SIGTERM (``{"signum": ...}``), read by :meth:`check_stop`.
        self.stop_request: dict | None = None
        self._observe_args = set(inspect.signature(self.observe).parameters)
        self._observe_takes_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD
                                         for p in inspect.signature(self.observe).parameters.values())
        self.to(self.device)
        self.optimizer: torch.optim.Optimizer = self.get_optimizer()
        self.scheduler: torch.optim.lr_scheduler.LRScheduler | None = None

    # ---- the network -------------------------------------------------------------------------
    @classmethod
    def backbone_options(cls, name: str) -> type:
        """The options dataclass of backbone ``name`` (raises ``UserError`` for unknown names).
        Methods with their own network provider (CLIP) override this and :meth:`create_backbone`."""
        from backbone import get_backbone_options
        return get_backbone_options(name)

    @classmethod
    def create_backbone(cls, name: str, dataset, options: Any, load: str | None = None) -> nn.Module:
        """The network; ``load`` (``--load``) is a model file whose weights replace its initial ones."""
        from backbone import create_backbone
        net = create_backbone(name, dataset.n_classes, options)
        if load is not None:
            from utils.model_files import load_checked, read_state_dict
            load_checked(net, read_state_dict(load), load, f"--backbone {name} with {dataset.n_classes} classes")
        return net

    def exported_module(self) -> nn.Module:
        """What ``--save_models`` exports after each task (its state_dict) and ``--load`` reads: the network."""
        return self.net

    @classmethod
    def input_view(cls, dataset, backbone: nn.Module, args: RunOptions, device: torch.device,
                   options: Any = None):
        """The data as this method consumes it (a dataset view, e.g. cached features); default: as is.
        ``options`` are the method's own (``Options``), for methods whose input depends on them."""
        return dataset

    # ---- bookkeeping ---------------------------------------------------------------------------
    @property
    def current_task(self) -> int:
        return self._current_task

    @property
    def n_past_classes(self) -> int:
        return self.dataset.get_offsets(self._current_task)[0] if self._current_task < self.n_tasks \
            else self.n_classes

    @property
    def n_seen_classes(self) -> int:
        return self.dataset.get_offsets(min(self._current_task, self.n_tasks - 1))[1]

    @property
    def n_classes_current_task(self) -> int:
        return self.n_seen_classes - self.n_past_classes

    @property
    def scheduler_mode(self) -> str:
        """'epoch' or 'iter': when the loop steps ``self.scheduler``."""
        return self.args.scheduler_mode

    # ---- hooks a method may override -----------------------------------------------------------
    def observe(self, inputs: Tensor, labels: Tensor, not_aug_inputs: Tensor, epoch: int | None = None
                ) -> float:
        """One training step on a batch; returns the loss as a float."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        """Logits over all classes (evaluation masks them to the classes that count)."""
        return self.net(x)

    def forward_samples(self, x: Tensor) -> Tensor | None:
        """Monte-Carlo logits ``(S, B, C)`` for methods that sample (predictive variance in novel-data
        detection, ``--eval_ood``); ``None`` for deterministic methods."""
        return None

    def begin_task(self, dataset) -> None: ...

    def end_task(self, dataset) -> None: ...

    def begin_epoch(self, epoch: int, dataset) -> None: ...

    def training_data(self, data):
        """The task's training data as this method trains on it (default: as given; CLAP4CLIP's ER appends the
        memory's items, ``models/utils/memory_replay.py``). The loop counts the steps of what this returns."""
        return data

    def end_epoch(self, epoch: int, dataset) -> None: ...

    def get_parameters(self) -> Iterable[nn.Parameter]:
        """The parameters the optimizer trains."""
        return [p for p in self.net.parameters() if p.requires_grad]

    def get_optimizer(self) -> torch.optim.Optimizer:
        a = self.args
        params = list(self.get_parameters())
        if not params:  # training-free methods still get a valid (inert) optimizer
            params = [nn.Parameter(torch.zeros(1, device=self.device), requires_grad=False)]
        return make_optimizer(a.optimizer, params, a.lr, momentum=a.optim_mom, weight_decay=a.optim_wd,
                              nesterov=a.optim_nesterov and a.optim_mom > 0)

    def get_scheduler(self, steps_per_epoch: int, n_epochs: int):
        """The task's learning-rate schedule; the loop steps it every epoch or iteration
        (``scheduler_mode``), so a method never has to remember to."""
        a = self.args
        total = n_epochs if self.scheduler_mode == "epoch" else steps_per_epoch * n_epochs
        if a.lr_scheduler == "cosine":
            return torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=max(total, 1))
        if a.lr_scheduler == "multisteplr":
            return torch.optim.lr_scheduler.MultiStepLR(self.optimizer, milestones=a.lr_milestones,
                                                        gamma=a.sched_gamma)
        return None

    @torch.no_grad()
    def selection_outputs(self, inputs: Tensor) -> dict[str, Tensor]:
        """What exemplar selectors score: ``features`` and ``logits`` (or per-image ``mc_logits``
        of shape (T, B, C) for methods with Monte-Carlo samples)."""
        logits, features = self.net(inputs, returnt="both")
        return {"features": features, "logits": logits[:, :self.n_seen_classes]}

    # ---- helpers for methods -------------------------------------------------------------------
    def transform(self, not_aug: Tensor) -> Tensor:
        """Augment and normalise a batch of [0, 1] images (e.g. replayed memory items)."""
        x = self._augment(not_aug, self.generator) if self._augment is not None else not_aug
        return self._normalize(x)

    def normalize(self, not_aug: Tensor) -> Tensor:
        return self._normalize(not_aug)

    def backward_and_step(self, loss: Tensor) -> None:
        """``loss.backward()`` and a step of ``self.optimizer``, through the fp16 grad scaler when there is one."""
        self.step(loss, self.optimizer)

    def step(self, loss: Tensor, optimizer: torch.optim.Optimizer | None = None) -> None:
        """``loss.backward()`` and a step of ``optimizer`` (default ``self.optimizer``; any optimizer a method builds,
        e.g. to train in ``end_task``), through the fp16 grad scaler when there is one. Zeroing the gradients
        before the forward pass stays the caller's."""
        optimizer = self.optimizer if optimizer is None else optimizer
        loss = self.shard_loss(loss)
        if self.scaler is None:
            loss.backward()
            self.reduce_gradients(optimizer)
            optimizer.step()
        else:
            self.scaler.scale(loss).backward()
            self.reduce_gradients(optimizer)
            self.scaler.step(optimizer)
            self.scaler.update()
        self.check_stop()

    def shard_loss(self, loss: Tensor) -> Tensor:
        """Under DDP, in a stream step, ``loss`` times ``N * local / global`` items (``utils/distributed.py``), so
        that the ranks' average is the global batch's loss; else ``loss`` itself."""
        return loss if self._ddp_step is None else loss * self._ddp_step.loss_weight()

    def reduce_gradients(self, optimizer: torch.optim.Optimizer) -> None:
        """Under DDP, in a stream step, average the gradients of ``optimizer``'s parameters over the ranks (between
        ``backward`` and the optimizer's step; a method that steps without :meth:`step` calls it itself)."""
        if self._ddp_step is not None:
            from utils.distributed import average_gradients
            average_gradients([p for group in optimizer.param_groups for p in group["params"]])
            self._ddp_step.stepped = True

    def check_stop(self) -> None:
        """Raise the loop's ``Interrupted`` if SIGINT/SIGTERM arrived: the loop checks before each stream batch,
        ``self.step`` after each step, so work in ``end_task`` (a fit on the memory) stops too. A long loop in a hook
        that does not go through ``self.step`` (a Fisher pass) may call it itself."""
        signum = (self.stop_request or {}).get("signum")
        if signum is not None:
            from utils.training import Interrupted
            raise Interrupted(signum)

    def named_trainable_parameters(self, module: nn.Module | None = None) -> dict[str, nn.Parameter]:
        """``get_parameters()`` by their names in ``module`` (default ``self.net``), in the same order: the dict
        ``torch.func.functional_call(module, params, args)`` takes (and ``torch.func.grad`` / ``vmap`` differentiate).
        A trained parameter outside ``module`` is an error."""
        module = self.net if module is None else module
        names = {id(p): n for n, p in module.named_parameters(remove_duplicate=False)}
        out: dict[str, nn.Parameter] = {}
        for p in self.get_parameters():
            if id(p) not in names:
                raise ValueError(f"{type(self).__name__}.get_parameters() trains a parameter of shape "
                                 f"{tuple(p.shape)} that is not in {type(module).__name__}")
            out[names[id(p)]] = p
        return out

    def non_finite_parameters(self) -> list[str]:
        """Names of the parameters holding NaN or infinite values (the loop checks after each task, before its
        checkpoint). Buffers are not checked: some hold -inf on purpose (CLIP's causal attention mask)."""
        tensors = [(n, t) for n, t in self.named_parameters() if t.is_floating_point()]
        if not tensors:
            return []
        finite = torch.stack([torch.isfinite(t).all() for _, t in tensors]).tolist()
        return [n for (n, _), ok in zip(tensors, finite) if not ok]

    def divergence_hint(self) -> str:
        """The likely causes of a diverged run, for its error message: the learning rate and the method's own
        numeric weights (its float options, e.g. EWC's --e_lambda)."""
        weights = [f"--{f.name} {getattr(self.opts, f.name):g}" for f in dataclasses.fields(self.opts)
                   if isinstance(getattr(self.opts, f.name), float)]
        hint = f"try a lower --lr (it is {self.args.lr:g})"
        if weights:
            hint += f", or smaller weights of {self.NAME}'s own terms ({', '.join(weights)})"
        return hint

    def make_buffer(self) -> ReservoirBuffer | ClassBalancedBuffer:
        a = self.args
        if a.buffer_size == 0 and a.buffer_per_class is None:
            raise UserError(f"model '{self.NAME}' needs a memory: pass --buffer_size N "
                            f"or --buffer_per_class K")
        if a.buffer_per_class is not None and a.buffer_size:
            raise UserError("--buffer_size and --buffer_per_class are exclusive: pass one of them")
        if a.buffer_mode == "balanced" or a.buffer_per_class is not None:
            return ClassBalancedBuffer(buffer_size=a.buffer_size or None, per_class=a.buffer_per_class,
                                       device=self.device, seed=a.seed)
        return ReservoirBuffer(a.buffer_size, device=self.device, seed=a.seed)

    def remember(self, **columns: Tensor) -> None:
        """Offer stream items to a reservoir memory (class-balanced memories fill at task end).
        With ``--buffer_storage index`` the ``examples`` column is stored as dataset indices (the batch's, or an
        ``indexes`` column given here, as a method that reads the task's data itself in ``end_task`` does)."""
        if isinstance(self.buffer, ReservoirBuffer):
            if self.args.buffer_storage == "index" and "examples" in columns:
                columns = {k: v for k, v in columns.items() if k != "examples"}
                columns.setdefault("indexes", self._batch_indexes)
            if self._ddp_step is not None:      # DDP: every rank offers the global batch, so memories agree
                from utils.distributed import gather_cat
                columns = {k: gather_cat(v) for k, v in columns.items()}
            self.buffer.add(**columns)

    def replay_batch(self) -> dict[str, Tensor] | None:
        """A sample of the memory, or ``None`` while it is empty."""
        if self.buffer is None or self.buffer.is_empty():
            return None
        return self._with_examples(self.buffer.sample(self.minibatch_size, generator=self.generator))

    def with_replay(self, inputs: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """The stream batch followed by an augmented memory batch (unchanged while the memory is empty)."""
        replay = self.replay_batch()
        if replay is None:
            return inputs, labels
        if self._ddp_step is not None:          # DDP: drawn and augmented whole on every rank, then sharded
            x, y = self._ddp_step.take(self.transform(replay["examples"]), replay["labels"])
            return torch.cat([inputs, x]), torch.cat([labels, y])
        return torch.cat([inputs, self.transform(replay["examples"])]), torch.cat([labels, replay["labels"]])

    def memory_items(self) -> dict[str, Tensor]:
        """Everything in the memory, with ``examples`` re-read if the memory stores indices."""
        return self._with_examples(dict(self.buffer.get_all()))

    def _with_examples(self, items: dict[str, Tensor]) -> dict[str, Tensor]:
        if "indexes" in items and "examples" not in items:
            items["examples"] = self.dataset.fetch(items["indexes"]).to(self.device)
        return items

    def herding_input(self) -> str:
        return self.HERDING_ON if self.args.herding_on == "auto" else self.args.herding_on

    def rescores_memory(self) -> bool:
        return self.RESCORES_MEMORY if self.args.rescore_memory is None else self.args.rescore_memory

    def _rank(self, labels: Tensor, outputs: dict[str, Tensor], quota: int) -> Tensor:
        return rank_exemplars(self.args.exemplar_selector, labels, keep=self.args.selector_keep,
                              generator=self.generator, k=quota, herding_on=self.herding_input(), **outputs)

    def _selection_outputs_of(self, batches) -> tuple[dict[str, Tensor], list[Tensor]]:
        """``selection_outputs`` over not-augmented image batches, concatenated, and the batches' images."""
        outputs: dict[str, list[Tensor]] = {}
        images = []
        for x in batches:
            for key, value in self.selection_outputs(self.normalize(x)).items():
                outputs.setdefault(key, []).append(value)
            images.append(x)
        return {k: torch.cat(v, dim=1 if k == "mc_logits" else 0) for k, v in outputs.items()}, images

    @torch.no_grad()
    def update_balanced_memory(self, dataset) -> None:
        """Select exemplars of the current task's classes (on un-augmented images, in eval mode) and
        shrink older classes to the new per-class quota (with ``rescores_memory()``, after re-ranking their
        stored exemplars with the current model, as CLAP4CLIP; else keeping the prefix of their ranking)."""
        data = dataset.task_data(self._current_task, "train")
        was_training = self.training
        self.eval()
        column = "indexes" if self.args.buffer_storage == "index" else "examples"
        batches = list(data.batches(self.args.eval_batch_size))
        cat, images = self._selection_outputs_of(b["not_aug_inputs"].to(self.device) for b in batches)
        stored = images if column == "examples" else [b["indexes"].to(self.device) for b in batches]
        labels_t = torch.cat([b["labels"].to(self.device) for b in batches])
        quota = self.buffer.quota(self.n_seen_classes)
        if self.rescores_memory() and len(self.buffer) and self.args.exemplar_selector != "random":
            old = self.memory_items()
            step = self.args.eval_batch_size
            old_out, _ = self._selection_outputs_of(old["examples"][i:i + step]
                                                    for i in range(0, len(old["labels"]), step))
            self.buffer.reprioritise(self._rank(old["labels"], old_out, quota))
        self.train(was_training)
        ranking = self._rank(labels_t, cat, quota)
        columns = {column: torch.cat(stored), "labels": labels_t}
        if column == "examples":            # positions too, so the items can be re-read (ER by appending)
            columns["indexes"] = torch.cat([b["indexes"].to(self.device) for b in batches])
        self.buffer.update(columns, ranking)

    def run_stats(self) -> dict[str, Any]:
        """Counters worth keeping in results.json (e.g. feature-cache use); none by default."""
        return {}

    # ---- called by the task loop ---------------------------------------------------------------
    def meta_begin_task(self, dataset, steps_per_epoch: int, n_epochs: int) -> None:
        self.begin_task(dataset)
        self.optimizer = self.get_optimizer()
        self.scheduler = self.get_scheduler(steps_per_epoch, n_epochs)

    def meta_observe(self, batch: dict[str, Tensor], epoch: int) -> float:
        self._batch_indexes = batch.get("indexes")
        if self._observe_takes_kwargs:
            kwargs = dict(batch)
        else:
            kwargs = {k: v for k, v in batch.items() if k in self._observe_args}
        if "epoch" in self._observe_args or self._observe_takes_kwargs:
            kwargs["epoch"] = epoch
        return self.observe(**kwargs)

    def meta_end_task(self, dataset) -> None:
        if isinstance(self.buffer, ClassBalancedBuffer):
            self.update_balanced_memory(dataset)
        with autocast(self.precision, self.device):     # as observe: training in end_task goes through self.step
            self.end_task(dataset)
        self._current_task += 1

    # ---- checkpoints ---------------------------------------------------------------------------
    def checkpoint_state(self) -> dict[str, Any]:
        """Everything needed to continue after the last completed task (tensors and plain data only): the
        ``state_dict`` (parameters, buffers, also those first registered as ``None``), and the tensors the method
        keeps in public plain attributes (``self.fisher = ...``, also in dicts, lists and tuples; attributes starting
        with ``_`` are caches and are not saved)."""
        return {
            "model": self.state_dict(),
            "attributes": self.tensor_attributes(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "buffer": self.buffer.state_dict() if self.buffer is not None else None,
            "generator": self.generator.get_state(),
            "current_task": self._current_task,
        }

    def tensor_attributes(self) -> dict[str, Any]:
        """The public plain attributes that hold tensors (what :meth:`checkpoint_state` saves besides the
        ``state_dict``); a ``UserError`` names one that a checkpoint could not restore."""
        out = {}
        for name, value in vars(self).items():
            if name.startswith("_") or not _holds_tensor(value):
                continue
            if not _checkpointable(value):
                raise UserError(f"{method_file(type(self))}: {type(self).__qualname__}.{name} holds tensors in a "
                                f"{type(value).__name__} that a checkpoint cannot restore, so --resume would lose them: "
                                f"keep them in a tensor, or a dict, list or tuple of tensors, or register_buffer them "
                                f"(or start the name with _ if it is a cache rebuilt on its own)")
            out[name] = value
        return out

    def load_checkpoint_state(self, state: dict[str, Any]) -> None:
        self._current_task = int(state["current_task"])
        self._fill_none_buffers(state["model"])
        self.load_state_dict(state["model"])
        for name, value in state.get("attributes", {}).items():
            current = vars(self).get(name)
            if isinstance(current, Tensor) and isinstance(value, Tensor) and current.shape == value.shape \
                    and current.dtype == value.dtype:
                with torch.no_grad():
                    current.copy_(value)                 # keeps an attribute that aliases another tensor
            else:
                setattr(self, name, value)
        self.optimizer = self.get_optimizer()
        self.optimizer.load_state_dict(state["optimizer"])
        if self.buffer is not None and state["buffer"] is not None:
            self.buffer.load_state_dict(state["buffer"])
        self.generator.set_state(state["generator"])

    def _fill_none_buffers(self, model_state: dict[str, Tensor]) -> None:
        """Give buffers registered as ``None`` (and set later, e.g. at the first ``end_task``) a tensor of the saved
        shape, so that ``load_state_dict`` restores them instead of refusing their keys."""
        for prefix, module in self.named_modules():
            for name, value in list(module._buffers.items()):
                key = f"{prefix}.{name}" if prefix else name
                if value is None and key in model_state and name not in module._non_persistent_buffers_set:
                    saved = model_state[key]
                    module._buffers[name] = torch.empty_like(saved, device=self.device)
