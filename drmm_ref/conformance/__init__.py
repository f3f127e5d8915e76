"""The porting kit: golden fixtures and a conformance runner for other implementations of the DRMM.

* :mod:`.spec` -- the adapter interface (one method per operation, NumPy arrays in and out);
* :mod:`.fixtures` -- the versioned, checksummed fixture files shipped in ``fixtures/``;
* :mod:`.cases` and :mod:`.generate` -- how the fixtures are made (``python -m drmm_ref.conformance.generate``);
* :mod:`.reference` -- the adapter over ``drmm_ref`` itself (``drmm_ref.conformance.reference:ADAPTER``);
* :mod:`.slips` -- the classic porting slips the runner recognises in a failing output;
* :mod:`.runner` -- ``python -m drmm_ref.conformance --adapter module:object [--only ...] [--json report.json]``.

docs/porting.md is the porting guide (conventions, position conversion, gradient tree, scale factors).
"""

from .fixtures import Case, FixtureError, fixture_dir, load_cases
from .runner import CaseResult, load_adapter, run_cases
from .spec import OPERATIONS, AdapterSpec, operation

__all__ = ["AdapterSpec", "Case", "CaseResult", "FixtureError", "OPERATIONS", "fixture_dir", "load_adapter",
           "load_cases", "operation", "run_cases"]
