#!/bin/bash
# tools/report's index.html in a real browser: headless Chromium renders the report that
# test_eval_report_test leaves in REPORT_DIR (its CTest fixture) once as a screenshot and once
# with a script that records where each <img> landed. Checks: the screenshot has the window's
# size and is not blank; every image loaded (the relative links work in a browser); each image
# inside the screenshot is drawn (its region is not page background), the first sample grid
# dark as its images are.
# Chromium is in the package list (tools/lib/common.sh): without it the test fails.
# Usage: report_browser.sh REPORT_DIR
set -u
report=${1:?usage: report_browser.sh REPORT_DIR}
PY=/usr/bin/python3
W=1280 H=4000
[ -e "$report/SKIPPED" ] && { echo "SKIP: the report fixture was skipped: $(cat "$report/SKIPPED")"; exit 77; }
[ -s "$report/index.html" ] || {
  echo "FAILED: $report/index.html is missing: test_eval_report_test writes it (ctest runs it first as this test's fixture a3fta_report)" >&2
  exit 1
}
browser=$(command -v chromium || true)
[ -n "$browser" ] || {
  echo "FAILED: chromium is not installed; it is in A3FTA_DEBIAN_PACKAGES (tools/lib/common.sh): apt-get install -y --no-install-recommends chromium" >&2
  exit 1
}
dir=$(mktemp -d "${TMPDIR:-/tmp}/a3fta-browser-XXXXXX")
fail=0
failed() { echo "FAILED: $*" >&2; fail=1; }
cp -r "$report" "$dir/rep"
# The same page plus a script that writes each image's box into the DOM after loading.
"$PY" - "$dir/rep/index.html" "$dir/rep/probe.html" <<'PY' || failed "writing probe.html"
import sys
page = open(sys.argv[1]).read()
script = """<script>
window.addEventListener("load", function () {
  var boxes = [].map.call(document.images, function (img) {
    var r = img.getBoundingClientRect();
    return {src: img.getAttribute("src"), x: r.left + window.scrollX, y: r.top + window.scrollY,
            w: r.width, h: r.height, natural: img.naturalWidth, done: img.complete};
  });
  document.body.setAttribute("data-boxes", JSON.stringify(boxes));
});
</script>
"""
assert page.count("</body>") == 1
open(sys.argv[2], "w").write(page.replace("</body>", script + "</body>"))
PY
chrome() { # chrome ARGS... : headless Chromium with a private profile, at W x H, scale 1
  timeout 90 "$browser" --headless --no-sandbox --disable-gpu --disable-dev-shm-usage \
    --hide-scrollbars --force-device-scale-factor=1 --no-first-run \
    --user-data-dir="$dir/profile" --window-size=$W,$H --virtual-time-budget=10000 "$@"
}
chrome --screenshot="$dir/shot.png" "file://$dir/rep/index.html" >"$dir/shot.log" 2>&1 ||
  failed "chromium --screenshot exited $?: $(grep -v dbus "$dir/shot.log" | tail -5)"
chrome --dump-dom "file://$dir/rep/probe.html" >"$dir/dom.html" 2>"$dir/dom.log" ||
  failed "chromium --dump-dom exited $?: $(grep -v dbus "$dir/dom.log" | tail -5)"

"$PY" - "$dir/shot.png" "$dir/dom.html" "$W" "$H" >"$dir/check" 2>&1 <<'PY' || failed "screenshot: $(cat "$dir/check")"
import sys, os, re, json, html
import numpy as np
import matplotlib
matplotlib.use("Agg")
import matplotlib.image as mpimg
shot, dom, W, H = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
assert os.path.exists(shot) and os.path.getsize(shot) > 0, "no screenshot"
a = mpimg.imread(shot)  # float in [0, 1], (H, W, 3 or 4)
assert a.ndim == 3 and a.shape[:2] == (H, W) and a.shape[2] in (3, 4), a.shape
rgb = a[:, :, :3].astype(float)
assert rgb.std() > 0.02, f"blank screenshot (pixel std {rgb.std():.4f})"
bg = rgb[2, 2]  # the page margin
assert (bg > 0.95).all(), f"page background is not white: {bg}"
m = re.search(r'data-boxes="([^"]*)"', open(dom).read())
assert m, "the probe script recorded no image boxes (did the load event fire?)"
boxes = json.loads(html.unescape(m.group(1)))
assert len(boxes) >= 10, boxes
broken = [b["src"] for b in boxes if not b["done"] or b["natural"] <= 0]
assert not broken, f"images the browser could not load: {broken}"
inside = [b for b in boxes if b["y"] + b["h"] <= H - 1 and b["w"] >= 16 and b["h"] >= 16]
assert len(inside) >= 3, f"{len(inside)} images inside the {W}x{H} screenshot: {boxes[:5]}"
checked = 0
for b in inside:
    x0, y0 = int(b["x"]) + 2, int(b["y"]) + 2
    x1, y1 = int(b["x"] + b["w"]) - 2, int(b["y"] + b["h"]) - 2
    region = rgb[y0:y1, x0:x1]
    differs = (np.abs(region - bg).max(axis=2) > 0.1).mean()
    assert differs > 0.02 and region.std() > 0.01, \
        f"{b['src']} at ({x0}, {y0})-({x1}, {y1}) looks like page background " \
        f"({100 * differs:.1f}% of pixels differ, std {region.std():.4f})"
    checked += 1
grids = [b for b in inside if b["src"].startswith("samples-")]
if grids:  # black grid with grey images: dark on the white page
    b = grids[0]
    region = rgb[int(b["y"]) + 2:int(b["y"] + b["h"]) - 2, int(b["x"]) + 2:int(b["x"] + b["w"]) - 2]
    assert region.mean() < 0.6, f"sample grid {b['src']} is not drawn (mean {region.mean():.3f})"
print(f"ok: {W}x{H} screenshot, pixel std {rgb.std():.3f}, {len(boxes)} images loaded, "
      f"{checked} checked on screen ({len(grids)} sample grids)")
PY
[ $fail = 0 ] && cat "$dir/check"
if [ $fail = 0 ]; then rm -rf "$dir"; else echo "kept $dir" >&2; fi
exit $fail
