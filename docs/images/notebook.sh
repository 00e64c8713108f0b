#!/bin/sh
# Makes docs/images/notebook.png: examples/getting_started.ipynb executed with the notebook extra
# (progress bars as widgets), rendered by Chromium with the widget manager loaded from local files.
# Needs: Debian's chromium, npm, and a virtualenv with `pip install -e '.[notebook,pandas]' nbconvert ipykernel`.
set -eu
here=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d)
cd "$work"
npm pack -s @jupyter-widgets/html-manager@1 requirejs@2 >/dev/null
for t in *.tgz; do mkdir "${t%.tgz}" && tar xzf "$t" -C "${t%.tgz}"; done
cp "$here/examples/getting_started.ipynb" .
jupyter nbconvert --to html --execute getting_started.ipynb --output notebook.html \
    --HTMLExporter.widget_renderer_url="file://$work/$(ls -d jupyter-widgets-html-manager-*/)package/dist/embed-amd.js" \
    --HTMLExporter.require_js_url="file://$work/$(ls -d requirejs-*/)package/require.js"
chromium --headless --no-sandbox --disable-gpu --disable-background-networking --user-data-dir="$work/profile" \
    --hide-scrollbars --allow-file-access-from-files --virtual-time-budget=5000 --window-size=1000,1500 \
    --screenshot="$here/docs/images/notebook.png" "file://$work/notebook.html"
