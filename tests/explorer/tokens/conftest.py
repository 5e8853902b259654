"""Make the small test transformers of ``token_test_models`` importable by the token tests."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
