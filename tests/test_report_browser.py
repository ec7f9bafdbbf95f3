"""report.html in headless Chromium: every image decodes (naturalWidth > 0), the tables are there; a
screenshot is kept in test-artifacts/report.png (gitignored) for a human to look at."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

# the smoke store's report, rendered once per session for this file and tests/test_reports.py
from test_reports import rendered_report

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
#: flags for a headless run as root with no network use
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars"]
#: writes each image's naturalWidth (0 when it did not decode) into the DOM once the page has loaded
PROBE = ("<script>window.addEventListener('load', () => { document.body.setAttribute('data-img-status', "
         "JSON.stringify(Array.from(document.images, i => (i.complete ? i.naturalWidth : 0)))); "
         # how far right the widest table reaches, against the viewport: a table wider than the page overflows
         "document.body.setAttribute('data-table-right', JSON.stringify([Math.max(...Array.from("
         "document.querySelectorAll('table'), t => t.getBoundingClientRect().right)), window.innerWidth])); "
         "document.body.setAttribute('data-open-details', document.querySelectorAll('details[open]').length + '/' "
         "+ document.querySelectorAll('details').length); "
         # where the first figure ends and the detail tables begin: both belong in the first screen of 2,000 px
         "document.body.setAttribute('data-first-screen', JSON.stringify([document.querySelector('figure')"
         ".getBoundingClientRect().bottom, document.querySelectorAll('table')[1].getBoundingClientRect().top])); "
         "});</script>")

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium (apt-get install -y chromium)")]


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    return subprocess.run([str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                          text=True, timeout=120)


def test_report_html_in_chromium(tmp_path_factory, tmp_path):
    page = rendered_report(tmp_path_factory)
    html = page.read_text()
    n_img = html.count("<img")
    assert n_img >= 6

    probe = tmp_path / "probe.html"  # a copy with the probe: the report itself carries no script
    probe.write_text(html.replace("</body>", PROBE + "</body>"))
    r = chromium(tmp_path, "--window-size=1280,2000", "--virtual-time-budget=10000", "--dump-dom", probe.as_uri())
    assert r.returncode == 0, r.stderr[-2000:]
    m = re.search(r'data-img-status="([^"]*)"', r.stdout)
    assert m, "the probe did not run: " + r.stdout[:500]
    widths = json.loads(m.group(1).replace("&quot;", '"'))
    assert len(widths) == n_img and all(w > 0 for w in widths), widths
    dom = r.stdout
    assert dom.count('<table class="dataframe results"') >= 3  # the main table and the detail tables
    assert "recon_<wbr>mse ↓" in dom and "<strong>" in dom
    right, width = json.loads(re.search(r'data-table-right="([^"]*)"', dom).group(1))
    assert width == 1280 and right <= width, (right, width)  # no table overflows a 1,280 px page
    figure_bottom, detail_top = json.loads(re.search(r'data-first-screen="([^"]*)"', dom).group(1))
    assert figure_bottom < 2000 and detail_top < 2000, (figure_bottom, detail_top)  # main table, claims, figures
    opened, total = re.search(r'data-open-details="(\d+)/(\d+)"', dom).groups()
    assert opened == "0" and int(total) >= 1  # the provenance is collapsed by default

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report.png"
    shot.unlink(missing_ok=True)
    r = chromium(tmp_path, "--window-size=1280,3000", f"--screenshot={shot}", page.as_uri())
    assert r.returncode == 0 and shot.exists(), r.stderr[-2000:]
    from PIL import Image

    with Image.open(shot) as img:
        assert img.size == (1280, 3000)
        lo, hi = img.convert("L").getextrema()
        assert hi - lo > 100  # not a blank page
