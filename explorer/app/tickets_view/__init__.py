"""The Tickets tab (lottery tickets): search, load, use and compare ticket masks.

:mod:`.view` holds the tab, :mod:`.search` the search job, :mod:`.plots` the Bokeh charts; every
table they draw comes from :mod:`prunescope.explorer.lottery.figures`.
"""

from prunescope.explorer.app.tickets_view.view import TicketsView

__all__ = ["TicketsView"]
