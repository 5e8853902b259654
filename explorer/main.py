"""Entry point of ``panel serve explorer``: Bokeh runs this file once per browser session.

Absolute imports only: Bokeh loads ``explorer/`` as a synthetic package, not as ``prunescope.explorer``.
App options come after ``--args`` (``panel serve explorer --args --model my_pkg:make_explorer``);
``prunescope serve`` passes them the same way.
"""

import sys

from prunescope.explorer.app import create_app
from prunescope.explorer.serve import parse_app_args

config = parse_app_args(sys.argv[1:])
create_app(models=config.entries(), max_upload_bytes=config.max_upload_bytes).servable()
