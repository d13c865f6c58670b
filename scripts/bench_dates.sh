#!/usr/bin/env bash
# Time plain `dlrun` (dates, gru_seq2seq, device=auto) from the command to its
# summary, data generation included: the cache is emptied first.
#   scripts/bench_dates.sh [extra overrides...]
set -euo pipefail
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export DLRUN_CACHE_DIR="$work/cache"
cd "$work"
start=$(date +%s.%N)
dlrun "$@" >"$work/out.txt" 2>"$work/err.txt" || { cat "$work/err.txt"; exit 1; }
end=$(date +%s.%N)
summary=$(ls "$work"/outputs/*/*/summary.json)
python3 - "$summary" "$start" "$end" <<'PY'
import json, sys
import torch
import dlrun
s = json.load(open(sys.argv[1]))
wall = float(sys.argv[3]) - float(sys.argv[2])
print(f"wall {wall:.1f} s (command to exit) | data {s['data_time_s']} s | train {s['train_time_s']} s "
      f"| steps {s['steps']} ({s['stop_reason']}) | best val step {s['best']['step']}")
print("test: " + ", ".join(f"{k}={v:.4f}" for k, v in s["test"].items()))
print(f"device: {s['device']} | torch {torch.__version__} | dlrun {dlrun.__version__} "
      f"| threads {torch.get_num_threads()}")
PY
