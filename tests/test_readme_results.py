"""The README's results table is the one the committed results JSON produce (no number typed by hand)."""
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("update_readme_results", ROOT / "scripts" / "update_readme_results.py")
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)


def test_readme_table_matches_results_json():
    readme = (ROOT / "README.md").read_text()
    assert mod.updated(readme, mod.render()) == readme, "run: python scripts/update_readme_results.py"
