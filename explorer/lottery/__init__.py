"""Lottery tickets: a masked trainer, iterative pruning with rewinding, variants, runs, overlaps.

Dask is imported only when a search is given a ``client``.
"""

from prunescope.explorer.lottery.imp import REWINDS, find_ticket
from prunescope.explorer.lottery.overlap import mask_overlap, mask_overlay, overlap_matrix, overlap_table, random_jaccard
from prunescope.explorer.lottery.prune import prune_step, random_mask_like
from prunescope.explorer.lottery.runs import LevelRecord, TicketRun, load_run
from prunescope.explorer.lottery.sample import find_sample_ticket, sample_ticket_inputs
from prunescope.explorer.lottery.tables import accuracy_vs_sparsity, labelled_masks, seed_overlap_by_level, ticket_masks
from prunescope.explorer.lottery.trainer import Cancelled, evaluate_state, reinit_state, train_masked
from prunescope.explorer.lottery.variants import StabilityResult, stability

__all__ = [
    "REWINDS", "Cancelled", "LevelRecord", "StabilityResult", "TicketRun", "evaluate_state", "find_sample_ticket",
    "find_ticket", "load_run", "mask_overlap", "mask_overlay", "overlap_matrix", "overlap_table", "prune_step",
    "random_jaccard", "random_mask_like", "reinit_state", "sample_ticket_inputs", "stability", "train_masked", "accuracy_vs_sparsity",
    "labelled_masks", "seed_overlap_by_level", "ticket_masks",
]
