"""Self-speculative decoding: a nested subnet of the same elastic checkpoint drafts, the deployed shape verifies.

verify.py holds the acceptance rule (greedy and rejection sampling) as pure functions; session.py the torch
session that runs it with a KV cache per model.
"""

from edgekit.speculative.session import SpeculationStats, SpeculativeSession, check_draft, elastic_speculative
from edgekit.speculative.verify import Verdict, verify_greedy, verify_sampled

__all__ = [
    "SpeculationStats",
    "SpeculativeSession",
    "Verdict",
    "check_draft",
    "elastic_speculative",
    "verify_greedy",
    "verify_sampled",
]
