#!/usr/bin/env bash
# Run every study preset in conf/experiment/ (or those named in $PRESETS) unattended and
# collect their tables into one Markdown report. A preset whose header command has -m is
# run as a sweep; a failed preset is reported and the others still run.
#
#   DLRUN_DATA_DIR=/data scripts/run_presets.sh [extra overrides for every run...]
#   PRESETS="imdb_lr imdb_tokenizer" OUT=runs/imdb scripts/run_presets.sh device=cuda
#
# Data: each task reads its default path under $DLRUN_DATA_DIR (aclImdb_v1.tar.gz,
# KMNIST/raw/, pairs.tsv; dates and algebra are generated). Output: $OUT/<preset>/ per
# preset and $OUT/REPORT.md (default OUT: presets/<date-time>).
set -uo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
out=${OUT:-presets/$(date +%Y-%m-%d_%H-%M-%S)}
presets=${PRESETS:-$(ls "$here"/conf/experiment/*.yaml | xargs -n1 basename | sed 's/\.yaml$//')}
mkdir -p "$out"
report="$out/REPORT.md"
{
  echo "# dlrun study presets"
  echo
  echo "$(date -u +%Y-%m-%dT%H:%MZ), dlrun $(python3 -c 'import dlrun; print(dlrun.__version__)'),"
  echo "torch $(python3 -c 'import torch; print(torch.__version__)'), overrides: ${*:-none}"
} >"$report"
failed=0
for preset in $presets; do
  yaml="$here/conf/experiment/$preset.yaml"
  if [ ! -f "$yaml" ]; then
    echo "run_presets: no preset '$preset' in conf/experiment/" >&2
    exit 2
  fi
  dir="$out/$preset"
  if grep -q '^# dlrun -m ' "$yaml"; then
    cmd=(dlrun -m "experiment=$preset" "hydra.sweep.dir=$dir" "$@")
  else
    cmd=(dlrun "experiment=$preset" "hydra.run.dir=$dir" "$@")
  fi
  echo "== $preset: ${cmd[*]}" >&2
  "${cmd[@]}" >"$out/$preset.log" 2>&1
  status=$?
  {
    echo
    echo "## $preset"
    echo
    grep '^# ' "$yaml" | grep -v '^# @package' | sed 's/^# //'
    echo
    echo "Command: \`${cmd[*]}\` (exit status $status)"
    echo
  } >>"$report"
  # The table in a folder of its own: a report is never written into a run directory.
  if [ -d "$dir" ] && dlrun-report "$dir" --out "$out/${preset}_report" >/dev/null \
    2>>"$out/$preset.log"; then
    cat "$out/${preset}_report/summary.md" >>"$report"
  else
    echo "No results: see $preset.log" >>"$report"
  fi
  [ "$status" -eq 0 ] || failed=$((failed + 1))
done
echo "report: $report ($failed preset(s) with failures)" >&2
[ "$failed" -eq 0 ]
