"""Entry point of ``panel serve explorer``: Bokeh runs this file once per browser session.

Absolute imports only: Bokeh loads ``explorer/`` as a synthetic package, not as ``prunescope.explorer``.
"""

from prunescope.explorer.app import create_app

create_app().servable()
