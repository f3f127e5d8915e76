"""Learning the DRMM: EG training, exact block steps, closed forms, the backprop baseline, the trainer.

SPEC §3 (Patel, Nguyen & Baraniuk 2016, §3). One idea per module:

* :mod:`.objectives`   -- the terms CE, RC, NN, H and their cotangents; the objective's gradient tree;
* :mod:`.estep`        -- the E-step (bottom-up latents, top-down rendering);
* :mod:`.optim`        -- SGD and Adam on trees of arrays, states as plain dataclasses;
* :mod:`.block_step`   -- the exact block step on RC at fixed latents by CGLS (damped mini-batch);
* :mod:`.closed_forms` -- class prior, switch priors, noise variance;
* :mod:`.steps`        -- one EG step and one backprop step, with their traces;
* :mod:`.config`       -- the training configuration (:class:`TrainConfig`);
* :mod:`.fit_loop`     -- the fit loop in memory: epochs of steps, closed forms, divergence checks;
* :mod:`.trainer`      -- the run around it: data splits, evaluation, JSON log, checkpoints, exact resume;
* :mod:`.checkpoint`   -- the checkpoint names, kept here (the files are :mod:`drmm_ref.io`'s);
* :mod:`.semi`         -- semi-supervised data: label split, paired batches, cluster accuracy;
* :mod:`.synthetic`    -- a seeded synthetic stand-in for MNIST.
"""

from ._tree import trainable, trainable_names, with_trainable
from .block_step import BlockOperator, BlockStepInfo, block_names, block_operator, block_step
from .checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from .closed_forms import PriorStats, apply_closed_forms, prior_stats
from .estep import EStep, e_step
from .objectives import (H_SIGNS, UNLABELLED, LossWeights, Terms, balance_term, cross_entropy, entropy_term,
                         fused_objective_and_gradients, nonnegativity, objective_and_gradients,
                         reconstruction)
from .optim import SGD, Adam, AdamState, LRSchedule, SGDState, lr_schedule, make_optimizer
from .semi import LabelSplit, align_classes, cluster_accuracy, confusion_matrix, label_split, paired_batches
from .steps import BACKPROP_WEIGHTS, EGConfig, StepTrace, backprop_step, eg_step
from .synthetic import SYNTHETIC_DESCRIPTION, mnist_or_synthetic, synthetic_digits
from .config import MODELS, TrainConfig
from .fit_loop import Batches, EpochProgress, FitResult, FitState, TrainingDiverged, fit
from .trainer import TrainResult, evaluate, latest_checkpoint, load_data, train

__all__ = [
    "Adam", "AdamState", "align_classes", "apply_closed_forms", "backprop_step", "BACKPROP_WEIGHTS",
    "balance_term", "Batches", "block_names", "block_operator", "block_step", "BlockOperator", "BlockStepInfo",
    "Checkpoint", "CheckpointError", "cluster_accuracy", "confusion_matrix", "cross_entropy", "e_step", "eg_step",
    "EGConfig", "entropy_term", "EpochProgress", "EStep", "evaluate", "fit", "FitResult", "FitState",
    "fused_objective_and_gradients", "H_SIGNS", "label_split", "LabelSplit", "latest_checkpoint",
    "load_checkpoint", "load_data", "LossWeights", "lr_schedule", "LRSchedule", "make_optimizer",
    "mnist_or_synthetic", "MODELS", "nonnegativity", "objective_and_gradients", "paired_batches", "prior_stats",
    "PriorStats", "reconstruction", "save_checkpoint", "SGD", "SGDState", "StepTrace", "SYNTHETIC_DESCRIPTION",
    "synthetic_digits", "Terms", "train", "trainable", "trainable_names", "TrainConfig", "TrainingDiverged",
    "TrainResult", "UNLABELLED", "with_trainable",
]
