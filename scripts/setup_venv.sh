#!/usr/bin/env bash
# Set up the virtual environment at .venv in the repository root.
#
# The heavy dependencies (torch is several GB) are installed once into a cache directory
# outside the clone, keyed on the hash of requirements.txt, so a fresh clone (CI) only pays
# for a small venv that points at that cache. Set MRIRECON_VENV_CACHE to move the cache,
# or MRIRECON_NO_CACHE=1 to install everything into .venv itself.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
key=$($PY -c "import hashlib,sys;print(hashlib.sha256(open('requirements.txt','rb').read()+sys.version.encode()).hexdigest()[:16])")

if [[ "${MRIRECON_NO_CACHE:-0}" == "1" ]]; then
    if [[ ! -f .venv/.deps-$key ]]; then
        rm -rf .venv
        $PY -m venv .venv
        .venv/bin/pip install -q --upgrade pip
        .venv/bin/pip install -q -r requirements.txt
        touch .venv/.deps-$key
    fi
else
    cache=${MRIRECON_VENV_CACHE:-$HOME/.cache/mrirecon/venvs}/$key
    if [[ ! -f "$cache/.complete" ]]; then
        echo "Installing dependencies into $cache (first time only, a few minutes)..."
        rm -rf "$cache.tmp"
        mkdir -p "$(dirname "$cache")"
        $PY -m venv "$cache.tmp"
        "$cache.tmp/bin/pip" install -q --upgrade pip
        "$cache.tmp/bin/pip" install -q -r requirements.txt
        touch "$cache.tmp/.complete"
        rm -rf "$cache"
        mv "$cache.tmp" "$cache"
        # venv scripts hard-code their directory; the tmp name is no longer valid, so we only
        # ever use the cache's site-packages (below), never its bin/.
    fi
    if [[ ! -f .venv/.deps-$key ]]; then
        rm -rf .venv
        $PY -m venv .venv
        site=$(.venv/bin/python -c "import sysconfig;print(sysconfig.get_paths()['purelib'])")
        dep_site=$(ls -d "$cache"/lib/python3*/site-packages)
        # addsitedir (not a bare path) so the cached packages' own .pth files are processed too.
        echo "import site; site.addsitedir('$dep_site')" > "$site/_mrirecon_deps.pth"
        touch .venv/.deps-$key
    fi
fi

# The package itself, editable: a .pth entry puts this clone on the venv's path (what an editable
# install does), so `import mrirecon` works from any folder. Checked from outside the clone: from its
# root the import would succeed without it.
venv_python="$PWD/.venv/bin/python"
if ! (cd / && "$venv_python" -c "import mrirecon") 2>/dev/null; then
    site=$("$venv_python" -c "import sysconfig;print(sysconfig.get_paths()['purelib'])")
    echo "$PWD" > "$site/_mrirecon_src.pth"
fi
# torchrun lives in the cached dependencies' bin/, which this venv does not use: the same launcher here.
if [[ ! -x .venv/bin/torchrun ]]; then
    printf '#!/bin/sh\nexec "%s" -m torch.distributed.run "$@"\n' "$venv_python" > .venv/bin/torchrun
    chmod +x .venv/bin/torchrun
fi
# The `mrirecon` command (pyproject.toml [project.scripts]) without a pip install (the package is on the path
# through the .pth above): the launcher pip would write.
if [[ ! -x .venv/bin/mrirecon ]]; then
    printf '#!/bin/sh\nexec "%s" -m mrirecon "$@"\n' "$venv_python" > .venv/bin/mrirecon
    chmod +x .venv/bin/mrirecon
fi
