#!/usr/bin/env bash
# The browser tests (tests/test_pages_browser.py) drive Debian's chromium through Playwright — Playwright cannot
# download its own browsers here — and the pages need CJK fonts to render Chinese. Install both when missing.
# Idempotent and quiet: does nothing when they are already there. Needs root (CI runs as root).
set -euo pipefail
have_chromium() { [ -x /usr/bin/chromium ]; }
have_cjk_fonts() { dpkg-query -W -f='${Status}' fonts-noto-cjk 2>/dev/null | grep -q "install ok installed"; }
if have_chromium && have_cjk_fonts; then
  exit 0
fi
echo "installing chromium and fonts-noto-cjk for the browser tests …" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq chromium fonts-noto-cjk >/dev/null
have_chromium && have_cjk_fonts
