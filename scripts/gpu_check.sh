#!/usr/bin/env bash
# shellcheck disable=SC2317  # the check functions are called through check()
# scripts/gpu_check.sh [--wheels DIR] [--device cuda|cpu] [--logs DIR] [--only REGEX]
#
# Runs every CUDA path of dlrun once on a GPU box, in 4.5 minutes on one H200 (measured
# 2026-12-04, BENCHMARKS.md), on data it writes itself (no data or network needed):
#   - installs dlrun from a wheel folder first if asked (--wheels DIR or WHEELS=DIR:
#     pip install --no-index --find-links DIR -e ".[test]"; see scripts/wheels.sh);
#   - trains dates, algebra, kmnist, imdb, text_pairs, text, tabular and images for a
#     few hundred steps in bf16; images, text (model=text_cnn too), tabular and kmnist
#     again with device.data=stream; dates in fp16 (GradScaler on); kmnist with
#     device.compile=true, with trainer.ema=0.99, and from its own weights (init_from);
#   - interrupts a run with SIGINT and resumes it; dlrun-predict of the GPU-trained
#     dates and imdb runs on the CPU and on the GPU;
#     torchrun --nproc_per_node=1 (and 2 ranks over NCCL where there are 2 GPUs);
#   - the CUDA tests (python -m pytest -m gpu);
# and prints a table (check, result, seconds) last; --only REGEX (ONLY=) runs only the
# checks whose names match, e.g. --only stream to rerun what failed (predict_* needs the
# train_dates and train_imdb runs in the same --logs). Each check goes on after a failure;
# the exit status is 1 if any failed. Logs and run directories go to --logs (LOGS=),
# by default $OUT/gpu_check when OUT is set, else ./gpu_check_DATE.
#
# --device cpu (DEVICE=cpu) runs the same checks on the CPU with tiny step counts,
# skipping those that need CUDA: it tests this script where there is no GPU.
set -uo pipefail

usage="usage: scripts/gpu_check.sh [--wheels DIR] [--device cuda|cpu] [--logs DIR] [--only REGEX]"
wheels=${WHEELS:-}
only=${ONLY:-}
device=${DEVICE:-cuda}
logs=${LOGS:-}
while [[ $# -gt 0 ]]; do
    case $1 in
        --wheels) wheels=${2:?$usage}; shift 2 ;;
        --device) device=${2:?$usage}; shift 2 ;;
        --logs) logs=${2:?$usage}; shift 2 ;;
        --only) only=${2:?$usage}; shift 2 ;;
        -h | --help) echo "$usage"; exit 0 ;;
        *) echo "gpu_check.sh: unknown argument '$1'; $usage" >&2; exit 2 ;;
    esac
done
if [[ $device != cuda && $device != cpu ]]; then
    echo "gpu_check.sh: --device must be cuda or cpu, not '$device'" >&2
    exit 2
fi
if [[ -z $logs ]]; then
    if [[ -n ${OUT:-} ]]; then logs=$OUT/gpu_check; else logs=$PWD/gpu_check_$(date +%Y%m%d-%H%M%S); fi
fi
mkdir -p "$logs"
logs=$(cd "$logs" && pwd)
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
helper=(python3 scripts/gpu_check.py)
echo "gpu_check: device $device, logs in $logs"

names=() results=() seconds=()
failed=0
# check NAME COMMAND...: run it with its output in $logs/NAME.log and record the result
# (with --only REGEX, only checks whose names match it run, beside install and data).
check() {
    local name=$1 start=$SECONDS rc
    shift
    if [[ -n $only && ! $name =~ $only && $name != install && $name != data ]]; then
        return 0
    fi
    echo "== $name"
    "$@" >"$logs/$name.log" 2>&1
    rc=$?
    names+=("$name") seconds+=($((SECONDS - start)))
    if [[ $rc -eq 0 ]]; then
        results+=(ok)
    else
        results+=("failed (exit $rc, $name.log)")
        failed=1
        tail -n 5 "$logs/$name.log" | sed 's/^/   | /'
    fi
}
skip() {
    [[ -n $only && ! $1 =~ $only ]] && return 0
    echo "== $1: skipped: $2"
    names+=("$1") results+=("skipped: $2") seconds+=(0)
}

if [[ -n $wheels ]]; then
    check install pip install --no-index --find-links "$wheels" -e ".[test]"
fi

# Sizes: a few hundred steps on a GPU, a handful on the CPU.
if [[ $device == cuda ]]; then
    steps=300 every=100 log=50 small=--small amp=bf16
    dates_data=(dataset.train_size=20000 dataset.val_size=1000 dataset.test_size=1000)
    algebra_data=(dataset.train_size=20000 dataset.val_size=500 dataset.test_size=500
        dataset.extrapolate_size=100)
    kmnist_val=0.1
    cuda_checks=1
    ngpu=$(python3 -c "import torch; print(torch.cuda.device_count())" 2>/dev/null || echo 0)
else
    steps=6 every=3 log=3 small="" amp=none
    dates_data=(dataset.train_size=768 dataset.val_size=128 dataset.test_size=128
        dataset.batch_size=64)
    algebra_data=("${dates_data[@]}" dataset.extrapolate_size=20)
    kmnist_val=0.17
    cuda_checks=0 ngpu=0
fi
data=$logs/data
runs=$logs/runs
# dlrun refuses a key given twice, so common holds no key a check sets itself: each
# run names its step count and its autocast (device.amp; bf16 is CUDA's default, named
# anyway so the runs say what they check).
common=(device="$device" trainer.max_epochs=null "trainer.eval_every=$every"
    "trainer.log_every=$log" trainer.stop_at=null trainer.num_samples=5
    "paths.cache_dir=$logs/cache")
declare -A task_args=(
    [dates]="task=dates ${dates_data[*]}"
    [algebra]="task=algebra ${algebra_data[*]}"
    [kmnist]="task=kmnist dataset.path=$data/KMNIST/raw dataset.val_fraction=$kmnist_val"
    [imdb]="task=imdb dataset.path=$data/aclImdb dataset.val_fraction=0.05"
    [text_pairs]="task=text_pairs dataset.path=$data/pairs.tsv"
    [text]="task=text dataset.path=$data/texts.csv"
    [tabular]="task=tabular dataset.path=$data/points.csv dataset.target=labels"
    [images]="task=images dataset.path=$data/images"
)

# verify RUN_DIR AMP STEPS [EXTRA...]: the run ended ok after STEPS steps with device.amp=AMP.
verify() {
    local dir=$1 amp_set=$2 n=$3
    shift 3
    # summary.json says "amp off" for device.amp=none.
    "${helper[@]}" verify "$dir" --device "$device" --amp "${amp_set/#none/off}" --steps "$n" "$@"
}

# train NAME AMP EXTRA_VERIFY OVERRIDES...: $steps steps with device.amp=AMP into $runs/NAME, verified.
train() {
    local name=$1 amp_set=$2 verify_extra=$3
    shift 3
    dlrun "${common[@]}" "trainer.max_steps=$steps" "device.amp=$amp_set" "$@" \
        "hydra.run.dir=$runs/$name" &&
        verify "$runs/$name" "$amp_set" "$steps" ${verify_extra:+"$verify_extra"}
}

check data "${helper[@]}" data "$data" $small
for task in dates algebra kmnist imdb text_pairs text tabular images; do
    # shellcheck disable=SC2086  # task_args hold several words
    check "train_$task" train "$task" "$amp" "" ${task_args[$task]}
done
# The same data kept on the host, memory-mapped, and streamed to the device in
# prefetched batches (device.data=stream; auto chooses it for data larger than the device).
stream() {
    local name=$1
    shift
    train "$name" "$amp" "" "$@" device.data=stream &&
        grep -q "streamed from a memory-mapped host copy" "$runs/$name/dlrun.log"
}
for task in images text tabular kmnist; do
    # shellcheck disable=SC2086
    check "stream_$task" stream "stream_$task" ${task_args[$task]}
done
# shellcheck disable=SC2086
check stream_text_cnn stream stream_text_cnn ${task_args[text]} model=text_cnn \
    optimizer=adamw optimizer.lr=1e-3

if ((cuda_checks)); then
    # shellcheck disable=SC2086
    check train_dates_fp16 train dates_fp16 fp16 --scaler ${task_args[dates]}
else
    skip train_dates_fp16 "no CUDA"
fi
# shellcheck disable=SC2086
check train_kmnist_compile train kmnist_compile "$amp" "" ${task_args[kmnist]} device.compile=true
# trainer.ema (the average kept on the device beside the weights); init_from (a new run from
# the kmnist run's weights, with a new learning rate; its summary records where it began).
# shellcheck disable=SC2086
check train_kmnist_ema train kmnist_ema "$amp" "" ${task_args[kmnist]} trainer.ema=0.99
init_from_run() {
    # shellcheck disable=SC2086
    train kmnist_init "$amp" "" ${task_args[kmnist]} "init_from=$runs/kmnist" optimizer.lr=1e-4 &&
        grep -q '"init_from"' "$runs/kmnist_init/summary.json"
}
check init_from_kmnist init_from_run

# Interrupt a long run with SIGINT once it has logged training, then resume it.
interrupt_resume() {
    local dir=$runs/resume pid rc step
    # shellcheck disable=SC2086
    dlrun "${common[@]}" ${task_args[dates]} trainer.max_steps=1000000 "device.amp=$amp" \
        "hydra.run.dir=$dir" &
    pid=$!
    for _ in $(seq 600); do
        grep -q '"split": "train"' "$dir/metrics.jsonl" 2>/dev/null && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.5
    done
    kill -INT "$pid"
    wait "$pid"
    rc=$?
    echo "interrupted run exited $rc (expected 130: 128 + SIGINT)"
    [[ $rc -eq 130 ]] || return 1
    grep -q '"status": "interrupted"' "$dir/summary.json" || return 1
    step=$("${helper[@]}" step "$dir") || return 1
    echo "checkpoints/last.pt at step $step; resuming to step $((step + steps))"
    dlrun resume="$dir" trainer.max_steps=$((step + steps)) || return 1
    grep -q "resumed from .* at step $step" "$dir/dlrun.log" || {
        echo "dlrun.log does not say it resumed at step $step"
        return 1
    }
    verify "$dir" "$amp" $((step + steps))
}
check interrupt_resume interrupt_resume

# dlrun-predict of the runs trained above, on the CPU and on the GPU.
predict() {
    local where=$1
    dlrun-predict --device "$where" "$runs/dates" "20 nov. 1989" "23.01.2003" "1. januar 2001" \
        | tee "$logs/predict_dates_$where.txt" &&
        [[ $(wc -l <"$logs/predict_dates_$where.txt") -eq 3 ]] &&
        dlrun-predict --device "$where" "$runs/imdb" "A wonderful, moving film." "Dull and awful." \
        | tee "$logs/predict_imdb_$where.txt" &&
        [[ $(grep -cE $'\t(positive|negative)\t[0-9.]+$' "$logs/predict_imdb_$where.txt") -eq 2 ]]
}
check predict_cpu predict cpu
if ((cuda_checks)); then
    check predict_cuda predict cuda
    cmp -s "$logs/predict_dates_cpu.txt" "$logs/predict_dates_cuda.txt" ||
        echo "   note: dates predictions differ between CPU and GPU (numerics; see the .txt files)"
else
    skip predict_cuda "no CUDA"
fi

# torchrun: one process per GPU; with one GPU that is a single process (no process group).
torchrun_check() {
    local nproc=$1 name=$2
    # shellcheck disable=SC2086
    torchrun --standalone "--nproc_per_node=$nproc" -m dlrun.train "${common[@]}" \
        "trainer.max_steps=$steps" "device.amp=$amp" ${task_args[dates]} \
        "hydra.run.dir=$runs/$name" &&
        verify "$runs/$name" "$amp" "$steps" --world "$nproc"
}
check torchrun_1proc torchrun_check 1 torchrun_1proc
if ((ngpu >= 2)); then
    check torchrun_nccl_2gpu torchrun_check 2 torchrun_2proc
elif ((cuda_checks)); then
    skip torchrun_nccl_2gpu "one GPU"
else
    skip torchrun_nccl_2gpu "no CUDA"
fi

if ((cuda_checks)); then
    # Only the modules that hold gpu tests: collecting every module would import the
    # trackers' packages (mlflow, wandb, optuna), which a GPU image may not have.
    mapfile -t gpu_tests < <(grep -l 'pytest.mark.gpu' tests/test_*.py)
    check pytest_gpu python3 -m pytest -m gpu -q -p no:cacheprovider "${gpu_tests[@]}"
else
    skip pytest_gpu "no CUDA"
fi

{
    echo
    echo "gpu_check on $device: $(python3 -c 'import torch; print("torch", torch.__version__,
        torch.cuda.get_device_name() if torch.cuda.is_available() else "")' 2>/dev/null)"
    printf '%-22s %-40s %8s\n' check result seconds
    for i in "${!names[@]}"; do
        printf '%-22s %-40s %8s\n' "${names[$i]}" "${results[$i]}" "${seconds[$i]}"
    done
    echo "logs: $logs"
} | tee "$logs/table.txt"
exit $failed
