"""A screenshot of an atlas page in headless Chromium (the README's picture of a channel page).

    python scripts/screenshot_atlas.py results/atlas_vgg16_hed stage3/channel0045.html results/atlas_screenshot.png

Needs Debian's `chromium` and `chromium-driver` (apt-get install chromium chromium-driver) and
Selenium (in the dev extras). The page opens from file://, as a user would open it.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("atlas", type=Path, help="an atlas job folder")
    parser.add_argument("page", help="a page inside it, e.g. stage3/channel0045.html")
    parser.add_argument("out", type=Path, help="the PNG to write")
    parser.add_argument("--width", type=int, default=1100)
    parser.add_argument("--height", type=int, default=1000)
    args = parser.parse_args()
    page = (args.atlas / args.page).resolve()
    if not page.is_file():
        raise SystemExit(f"page: {page} does not exist")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"):
        options.add_argument(argument)
    options.add_argument(f"--window-size={args.width},{args.height}")
    driver = webdriver.Chrome(
        service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"), options=options
    )
    try:
        driver.get(page.as_uri())
        driver.save_screenshot(str(args.out))
    finally:
        driver.quit()
    print(f"wrote {args.out} ({page.relative_to(args.atlas.resolve())})")


if __name__ == "__main__":
    main()
