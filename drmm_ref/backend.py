"""The public home of the backend layer: namespaces, devices, host copies, seeded random arrays, atomic files,
the host CPU's subnormal mode.

Scripts (``validation/``, ``benchmarks/``, ``figures/``) and users import these from here; the private modules
behind them (``drmm_ref._backend``, ``drmm_ref._files``) may change. See ``drmm_ref._backend`` for the
conventions (an ``xp=`` override on every function that takes arrays; CuPy imported only when asked for).
"""

from ._backend import (asarray, backend_problem, check_same_device, device_of, get_namespace, host_rng, is_floating,
                       is_integer, keep_freed_host_memory, namespace_name, random_integers, random_normal,
                       random_uniform, resolve_namespace, to_numpy)
from ._files import array_checksum, atomic_write, atomic_write_json, atomic_write_text
from ._fpenv import denormals_flushed, flush_denormals, flush_denormals_problem

__all__ = [
    "asarray", "backend_problem", "check_same_device", "device_of", "get_namespace", "host_rng", "is_floating",
    "is_integer", "keep_freed_host_memory", "namespace_name", "random_integers", "random_normal", "random_uniform",
    "resolve_namespace", "to_numpy",
    "array_checksum", "atomic_write", "atomic_write_json", "atomic_write_text",
    "denormals_flushed", "flush_denormals", "flush_denormals_problem",
]
