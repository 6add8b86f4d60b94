"""The bundled sample data is exactly what the generator script produces."""

import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO_ROOT, SAMPLE_DIR


def test_generator_reproduces_the_bundled_files(tmp_path: Path):
    subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "generate_sample_data.py"), str(tmp_path)],
        check=True,
        capture_output=True,
    )
    for name in ("salesforce_contacts.csv", "income_enrichment.csv", "products.csv", "orders.csv"):
        assert (tmp_path / name).read_bytes() == (SAMPLE_DIR / name).read_bytes(), name
