"""Claim-validation scripts for drmm_ref: one module per claim of Patel et al. 2016 (SPEC.md).

Run them all with ``python -m validation`` from the repository root (see ``validation._runner``);
one alone with ``python -m validation.<module> --quick``. The library never imports this package.
"""
