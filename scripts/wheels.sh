#!/usr/bin/env bash
# scripts/wheels.sh DIR: on a machine with a package index, download into DIR the
# wheels of everything dlrun and its test extra need except torch, for CPython
# 3.10-3.12 on x86-64 Linux, so that a GPU box whose image has torch installs dlrun
# with no network:
#
#   scripts/wheels.sh wheels/                        # here, with network
#   pip install --no-index --find-links wheels/ -e ".[test]"   # there, without
#
# The requirement list is pyproject.toml's (dependencies, the test extra and the
# build backend) less torch, so torch and its nvidia-* packages are never fetched;
# nothing else dlrun needs depends on torch (checked at the end). Packages that
# publish only a source archive (antlr4-python3-runtime 4.9.3, omegaconf's parser
# runtime) are built into pure-Python wheels with `pip wheel`.
#
# Settings (environment): PYTHONS="3.10 3.11 3.12", PLATFORMS (manylinux tags
# accepted, default manylinux2014 up to glibc 2.28, what torch's CUDA wheels need
# anyway), EXTRAS="test", PYTHON (the interpreter whose pip does the work, python3).
set -euo pipefail

if [[ $# -ne 1 || $1 == -* ]]; then
    echo "usage: scripts/wheels.sh DIR   (downloads dlrun's dependencies but torch into DIR)" >&2
    exit 2
fi
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
mkdir -p "$1"
dir=$(cd "$1" && pwd)
python=${PYTHON:-python3}
pythons=${PYTHONS:-3.10 3.11 3.12}
extras=${EXTRAS:-test}
platforms=${PLATFORMS:-manylinux2014_x86_64 $(for g in $(seq 28 -1 17); do printf 'manylinux_2_%s_x86_64 ' "$g"; done)}
pip=("$python" -m pip --disable-pip-version-check)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
start=$SECONDS

# 1. The requirement list: pyproject.toml is its one source.
"$python" - "$root/pyproject.toml" "$extras" >"$work/requirements.txt" <<'EOF'
import re
import sys

try:
    import tomllib
except ImportError:  # Python 3.10: pip vendors the same parser
    from pip._vendor import tomli as tomllib

with open(sys.argv[1], "rb") as f:
    doc = tomllib.load(f)
reqs = list(doc["build-system"]["requires"]) + list(doc["project"]["dependencies"])
for extra in sys.argv[2].split():
    reqs += doc["project"]["optional-dependencies"][extra]
for req in dict.fromkeys(reqs):
    name = re.match(r"[A-Za-z0-9._-]+", req).group(0).lower().replace("_", "-")
    if name != "torch":  # the GPU image has it, with its CUDA packages
        print(req)
EOF
echo "requirements (pyproject.toml less torch):"
sed 's/^/  /' "$work/requirements.txt"

# 2. Source-only packages: resolve for this interpreter (metadata only, nothing is
# installed) and build a wheel of each one the index has no wheel of.
"${pip[@]}" install --quiet --dry-run --ignore-installed --report "$work/report.json" \
    -r "$work/requirements.txt"
"$python" - "$work/report.json" >"$work/sdists.txt" <<'EOF'
import json
import sys

for item in json.load(open(sys.argv[1]))["install"]:
    if not item["download_info"]["url"].endswith(".whl"):
        meta = item["metadata"]
        print(f"{meta['name']}=={meta['version']}")
EOF
while read -r sdist; do
    echo "building a wheel of $sdist (no wheel on the index)"
    "${pip[@]}" wheel --quiet --no-deps --wheel-dir "$dir" "$sdist"
done <"$work/sdists.txt"

# 3. Wheels only, per Python version, for x86-64 Linux; DIR is also searched so the
# wheels built above satisfy their requirement. pip evaluates environment markers
# (pytest's `tomli; python_version < "3.11"`) for the interpreter it runs in, not
# for --python-version, so pip runs here with the target's marker values.
cat >"$work/pip_for.py" <<'EOF'
import sys

from pip._internal.cli.main import main
from pip._vendor.packaging import markers

version = sys.argv.pop(1)
host = markers.default_environment


def target() -> dict:
    env = host()
    env.update(
        python_version=version,
        python_full_version=version + ".0",
        implementation_name="cpython",
        implementation_version=version + ".0",
        platform_python_implementation="CPython",
        os_name="posix",
        sys_platform="linux",
        platform_system="Linux",
        platform_machine="x86_64",
    )
    return env


markers.default_environment = target
sys.exit(main())
EOF
platform_args=()
for p in $platforms; do platform_args+=(--platform "$p"); done
for v in $pythons; do
    echo "downloading for CPython $v"
    "$python" "$work/pip_for.py" "$v" download --disable-pip-version-check --quiet \
        --dest "$dir" --find-links "$dir" --only-binary=:all: \
        "${platform_args[@]}" --python-version "$v" --implementation cp --abi "cp${v/./}" \
        -r "$work/requirements.txt"
done

# 4. Nothing pulled torch or a CUDA package in after all.
unwanted=$(find "$dir" -maxdepth 1 \( -name 'torch-*' -o -name 'nvidia_*' -o -name 'triton-*' \))
if [[ -n $unwanted ]]; then
    echo "wheels.sh: a dependency pulled torch or CUDA packages into $dir:" >&2
    echo "$unwanted" >&2
    exit 1
fi
count=$(find "$dir" -maxdepth 1 -name '*.whl' | wc -l)
size=$(du -sh "$dir" | cut -f1)
echo "$count wheels, $size in $dir ($((SECONDS - start)) s); on the GPU box:"
echo "  pip install --no-index --find-links $dir -e \".[test]\""
