"""The Deep Rendering Mixture Model (SPEC §2; Patel, Nguyen & Baraniuk 2016, §2.2).

One idea per module:

* :mod:`.network`   -- structure (layers, sizes, presets of SPEC §6);
* :mod:`.params`    -- :class:`DRMMParams` and seeded initialisation;
* :mod:`.latents`   -- per-unit positions and switches;
* :mod:`.render`    -- rendering, sampling, prior-expected renderings;
* :mod:`.inference` -- bottom-up pass (DCN forward), top-down pass, log joint;
* :mod:`.backward`  -- generic backward pass of the scores (input and parameters), render VJP;
* :mod:`.relaxation`-- which case of SPEC §4 a network is in (exact max-sum or lower bound);
* :mod:`.enumerate` -- brute-force oracle over every latent configuration, for tiny nets only.
"""

from .backward import Gradients, backward, backward_and_render, render_vjp
from .inference import BottomUp, bottom_up, class_scores, log_joint, log_prior_latents, top_down
from .latents import Latents
from .network import PRESETS, Layer, Network, preset
from .params import DRMMParams, init_params, template_maps
from .relaxation import RelaxationReport, relaxation_report, rendered_negativity
from .render import Rendering, Sample, draw_latents, expected_rendering, render, render_layer, sample

__all__ = [
    "BottomUp", "DRMMParams", "Gradients", "Latents", "Layer", "Network", "PRESETS", "RelaxationReport",
    "Rendering", "Sample", "backward", "bottom_up", "class_scores", "draw_latents", "expected_rendering",
    "init_params", "log_joint", "log_prior_latents", "preset", "relaxation_report", "render", "rendered_negativity",
    "render_layer", "render_vjp", "backward_and_render", "sample", "template_maps", "top_down",
]
