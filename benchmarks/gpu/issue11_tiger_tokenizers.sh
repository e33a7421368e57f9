#!/usr/bin/env bash
# Issue 11, GPU evidence, one command: TIGER x {shipped rqvae_zcr, shipped rkmeans_zcr, ours, random}
# x 3 seeds on scientific2018 (benchmarks/gpu_issue11_tiger_tokenizers.yaml), 12 processes at once
# on one GPU, about 9 minutes on one H200. Run from the repository root with the project's
# environment active (torch with CUDA, the `offline` extra for MiniLM):
#
#   OUT=/some/folder bash benchmarks/gpu/issue11_tiger_tokenizers.sh
#
# Leaves ONE archive, $OUT/issue11_tiger_tokenizers.tar.gz: the run records (runs/), tables
# (tables/), per-cell logs and suite state (suites/), the four tokenizer reports (tokenizers/), the
# script's own log with timings (issue11.log), nvidia-smi before/after and the environment.
# Model checkpoints are left out. The suite resumes: rerunning with the same OUT (or unpacking the
# archive into results/ and running the suite there) skips finished cells.
#
# Knobs (environment): DATA_PATH (folder holding scientific2018/, default ../shared/datasets),
# EPOCHS (epoch budget = cosine horizon, default 20), TRAIN_BUDGET_S (training wall-clock cap per
# run, default 330), SLOTS (parallel cells, default 12), WALL_S (hard cap of the suite, default 480),
# USE_MPS=1 (start CUDA MPS for the run if the machine allows it; off by default: it changes how the
# GPU is shared).
set -uo pipefail

OUT=${OUT:?set OUT to the folder that receives the archive}
DATA_PATH=${DATA_PATH:-../shared/datasets}
EPOCHS=${EPOCHS:-20}
TRAIN_BUDGET_S=${TRAIN_BUDGET_S:-330}
SLOTS=${SLOTS:-12}
WALL_S=${WALL_S:-480}
SUITE=benchmarks/gpu_issue11_tiger_tokenizers.yaml
WORK="$OUT/issue11"
LOG="$WORK/issue11.log"
mkdir -p "$WORK/tokenizers"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false  # 12 processes share the CPU cores
export RECBOLE_EXT_CACHE=${RECBOLE_EXT_CACHE:-$HOME/.cache/recbole_ext}
START=$(date +%s)
say() { echo "[$(( $(date +%s) - START ))s] $*" | tee -a "$LOG"; }

# --- preflight: fail in seconds, not after the GPU time is spent ---
[ -f "$SUITE" ] || { echo "run from the repository root ($SUITE not found)"; exit 2; }
if [ ! -f "$DATA_PATH/scientific2018/scientific2018.inter.gz" ]; then
    echo "scientific2018 not found under DATA_PATH=$DATA_PATH (copy ../shared/datasets beside the checkout)"; exit 2
fi
if [ ! -e ../shared/datasets ]; then  # the suite names the shipped indexes by ../shared/datasets/...
    mkdir -p ../shared && ln -s "$(cd "$DATA_PATH" && pwd)" ../shared/datasets
fi
python - <<'EOF' || exit 2
import sys, torch
if not torch.cuda.is_available():
    sys.exit("no CUDA device visible to torch: this script is for a GPU machine")
import faiss, scipy, transformers  # noqa: F401  (rkmeans, reassignment, T5)
from recbole_ext.text import offline_minilm_folder
print("cuda:", torch.cuda.get_device_name(0), "| MiniLM:", offline_minilm_folder())
EOF
{ nvidia-smi; python -c "import torch, transformers, recbole; print(torch.__version__, torch.version.cuda, transformers.__version__, recbole.__version__)"; git rev-parse HEAD; git status --short | head -50; } > "$WORK/environment.txt" 2>&1
nvidia-smi > "$WORK/nvidia-smi-before.txt" 2>&1
MPS_STARTED=0
if [ "${USE_MPS:-0}" = 1 ] && command -v nvidia-cuda-mps-control >/dev/null; then
    export CUDA_MPS_PIPE_DIRECTORY="$WORK/mps-pipe" CUDA_MPS_LOG_DIRECTORY="$WORK/mps-log"
    mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
    nvidia-cuda-mps-control -d && MPS_STARTED=1 && say "CUDA MPS started"
fi
say "start: EPOCHS=$EPOCHS TRAIN_BUDGET_S=$TRAIN_BUDGET_S SLOTS=$SLOTS WALL_S=$WALL_S DATA_PATH=$DATA_PATH"

# --- 1. the four tokenizers, once (embeddings + our IDs into the cache; cells then only read it) ---
report() {  # name, then sid options
    local name=$1; shift
    python -m recbole_ext.sid report --dataset=scientific2018 --data_path="$DATA_PATH" "$@" \
        --json="$WORK/tokenizers/$name.json" >> "$WORK/tokenizers/$name.log" 2>&1 \
        && say "tokenizer $name: $(python -c "import json,sys; r=json.load(open(sys.argv[1]))['report']; print('collision rate', r['collision_rate'], '| level usage', [l['usage'] for l in r['levels']])" "$WORK/tokenizers/$name.json")" \
        || say "tokenizer $name FAILED (see tokenizers/$name.log)"
}
IDX=../shared/datasets/scientific2018/indexes
report rqvae_zcr --sid_tokenizer=external --sid_path=$IDX/scientific2018.rqvae_zcr.index.json
report rkmeans_zcr --sid_tokenizer=external --sid_path=$IDX/scientific2018.rkmeans_zcr.index.json
report ours --sid_tokenizer=rqvae --sid_levels=4 --sid_collision=reassign
report random --sid_tokenizer=random --sid_levels=4 --sid_collision=reassign

# --- 2. the 12 cells at once on GPU 0, capped; the launcher writes one record per finished cell ---
GPUS=$(python -c "print(','.join(['0'] * $SLOTS))")
say "suite: $SLOTS cells in parallel on GPU 0"
timeout --signal=INT --kill-after=30 "$WALL_S" python run_benchmark.py --suite=$SUITE --gpus="$GPUS" \
    --data_path="$DATA_PATH" --output_dir="$WORK" --epochs="$EPOCHS" --train_time_budget_s="$TRAIN_BUDGET_S" \
    >> "$LOG" 2>&1
say "suite exit code $? ($(ls "$WORK"/runs/scientific2018/TIGER/*.json 2>/dev/null | wc -l) of 12 records)"
python run_benchmark.py --tables --output_dir="$WORK" >> "$LOG" 2>&1 || say "tables FAILED"
nvidia-smi > "$WORK/nvidia-smi-after.txt" 2>&1
[ "$MPS_STARTED" = 1 ] && echo quit | nvidia-cuda-mps-control

# --- 3. one archive: records, tables, logs, tokenizer reports (no checkpoints) ---
python - "$WORK" >> "$LOG" 2>&1 <<'EOF'
import json, pathlib, statistics, sys
work = pathlib.Path(sys.argv[1])
rows = {}
for f in sorted((work / "runs" / "scientific2018" / "TIGER").glob("*.json")):
    r = json.loads(f.read_text())
    cfg = r["config"]
    name = cfg.get("sid_tokenizer") + (":" + pathlib.Path(cfg["sid_path"]).name if cfg.get("sid_path") else "")
    rows.setdefault(r.get("label") or name, []).append(r)
for label, rs in sorted(rows.items()):
    n = [x["test"]["ndcg@10"] for x in rs]; h = [x["test"]["hit@10"] for x in rs]
    ep = [x["timings"]["epochs"] for x in rs]; s = [x["timings"]["s_per_epoch"] for x in rs]
    print(f"{label}: seeds {len(rs)} test NDCG@10 {statistics.mean(n):.4f} HR@10 {statistics.mean(h):.4f} "
          f"epochs {ep} s/epoch {s} budget hit {[x['extra'].get('stopped_by_time_budget') for x in rs]}")
EOF
say "done"
tar czf "$OUT/issue11_tiger_tokenizers.tar.gz" -C "$OUT" --exclude='*/checkpoints/*' --exclude='mps-pipe' issue11
echo "archive: $OUT/issue11_tiger_tokenizers.tar.gz ($(du -h "$OUT/issue11_tiger_tokenizers.tar.gz" | cut -f1))"
