"""Learning the DRMM: EG training, exact block steps, closed forms, the backprop baseline, the trainer.

SPEC §3 (Patel, Nguyen & Baraniuk 2016, §3). One idea per module:

* :mod:`.objectives`   -- the terms CE, RC, NN, H and their cotangents; the objective's gradient tree;
* :mod:`.estep`        -- the E-step (bottom-up latents, top-down rendering);
* :mod:`.optim`        -- SGD and Adam on trees of arrays, states as plain dataclasses;
* :mod:`.block_step`   -- the exact block step on RC at fixed latents by CGLS (damped mini-batch);
* :mod:`.closed_forms` -- class prior, switch priors, noise variance;
* :mod:`.steps`        -- one EG step and one backprop step, with their traces;
* :mod:`.trainer`      -- the mini-batch loop, evaluation, JSON log, checkpoints and exact resume;
* :mod:`.checkpoint`   -- checkpoint files;
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
from .optim import SGD, Adam, AdamState, SGDState, make_optimizer
from .semi import LabelSplit, align_classes, cluster_accuracy, confusion_matrix, label_split, paired_batches
from .steps import BACKPROP_WEIGHTS, EGConfig, StepTrace, backprop_step, eg_step
from .synthetic import SYNTHETIC_DESCRIPTION, mnist_or_synthetic, synthetic_digits
from .trainer import MODELS, TrainConfig, TrainResult, evaluate, latest_checkpoint, load_data, train

__all__ = [
    "Adam", "AdamState", "LabelSplit", "align_classes", "UNLABELLED", "balance_term", "cluster_accuracy", "confusion_matrix",
    "label_split", "paired_batches", "BACKPROP_WEIGHTS", "BlockOperator", "BlockStepInfo", "Checkpoint", "CheckpointError",
    "EGConfig", "EStep", "fused_objective_and_gradients", "H_SIGNS", "LossWeights", "MODELS", "PriorStats", "SGD", "SGDState", "StepTrace",
    "SYNTHETIC_DESCRIPTION", "Terms", "TrainConfig", "TrainResult", "apply_closed_forms", "backprop_step",
    "block_names", "block_operator", "block_step", "cross_entropy", "e_step", "eg_step", "entropy_term",
    "evaluate", "latest_checkpoint", "load_checkpoint", "load_data", "make_optimizer", "mnist_or_synthetic", "nonnegativity",
    "objective_and_gradients", "prior_stats", "reconstruction", "save_checkpoint", "synthetic_digits",
    "trainable", "trainable_names", "train", "with_trainable",
]
