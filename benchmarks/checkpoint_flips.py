"""Random byte flips and truncations of a checkpoint (a review script; docs/guarantees.md).

Run from a tree's root: `python benchmarks/checkpoint_flips.py 1000 150`.
"""
import sys
import os
import json
import collections
from pathlib import Path
sys.path.insert(0, os.getcwd())
import numpy as np
import drmm_ref
assert Path(drmm_ref.__file__).resolve().is_relative_to(Path.cwd())
from drmm_ref.drmm import Layer, Network  # noqa: E402
from drmm_ref.learning import (TrainConfig, synthetic_digits, train, load_checkpoint, latest_checkpoint,  # noqa: E402
                               CheckpointError, trainable)
import tempfile  # noqa: E402
tmp = Path(tempfile.mkdtemp())
net = Network((1, 28, 28), (Layer(2, 5, 0, 2), Layer(3, 5, 0, 2)), n_classes=10, name="n")
train(TrainConfig(model="dcn", net=net, epochs=2, batch_size=30, data="synthetic"),
      synthetic_digits(60, 20, 20, seed=0), tmp, progress=False)
path = latest_checkpoint(tmp)
raw = path.read_bytes()
ref = load_checkpoint(path)
def same(a, b):
    ta, tb = trainable(a.params), trainable(b.params)
    return (all(np.array_equal(ta[k], tb[k]) for k in ta) and a.epoch == b.epoch and a.history == b.history
            and a.config == b.config and a.rng_state == b.rng_state)
rng = np.random.default_rng(0)
nf, nt = int(sys.argv[1]), int(sys.argv[2])
out = collections.Counter()
examples = {}
bad = tmp / "bad.npz"
for i in range(nf + nt):
    b = bytearray(raw)
    if i < nf:
        j = int(rng.integers(len(b)))
        b[j] ^= int(rng.integers(1, 256))
    else:
        b = b[:int(rng.integers(len(b)))]
    bad.write_bytes(bytes(b))
    try:
        ck = load_checkpoint(bad)
        k = "loaded-identical" if same(ck, ref) else "silent-different"
    except CheckpointError:
        k = "CheckpointError"
    except Exception as exc:
        k = "unexpected " + type(exc).__name__
        examples.setdefault(k, str(exc)[:100])
    out[k] += 1
print(json.dumps(dict(out)), json.dumps(examples))
