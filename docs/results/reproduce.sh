#!/usr/bin/env bash
# Reproduce one comparison report of docs/results/: every model x 3 seeds through `recsys compare`,
# FuxiCTR's DIN and DNN on exactly the same rows (benchmarks/peers/), then the report with the peer rows,
# copied (report, plots, results.json; no data, no predictions) into docs/results/<name>/.
#
#   bash docs/results/reproduce.sh builtin        # the built-in dataset (made here if missing)
#   bash docs/results/reproduce.sh ml-100k-mm     # needs ../shared/data/ml-100k-mm
#   bash docs/results/reproduce.sh lastfm-2k-mm   # needs ../shared/data/lastfm-2k-mm
#
# Re-running continues where it stopped: finished runs are reused. Environment overrides:
# MODELS (default lr,dnn,din,concat,man,man_d1,marn_paper,marn), SEEDS (3), WORKERS (1), EPOCHS (config's).
set -euo pipefail
cd "$(dirname "$0")/../.."

name=${1:?usage: reproduce.sh builtin|ml-100k-mm|lastfm-2k-mm}
models=${MODELS:-lr,dnn,din,concat,man,man_d1,marn_paper,marn}
seeds=${SEEDS:-3}
workers=${WORKERS:-1}
py=.venv/bin/python
recsys=.venv/bin/recsys

case "$name" in
  builtin)
    config=configs/default.yaml
    data=data/default
    [ -f "$data/items.parquet" ] || $recsys data make-default --out "$data" --size small
    ;;
  ml-100k-mm | lastfm-2k-mm)
    config=configs/$name.yaml
    data=../shared/data/$name
    [ -d "$data" ] || { echo "reproduce.sh: $data not found (the real datasets live in ../shared/data)" >&2; exit 2; }
    ;;
  *) echo "reproduce.sh: unknown report '$name' (builtin, ml-100k-mm, lastfm-2k-mm)" >&2; exit 2 ;;
esac

out=runs/compare-$name
peer=benchmarks/_work/fuxictr/$name
args=(--config "$config" --data "$data" --models "$models" --seeds "$seeds" --workers "$workers" --out "$out")
[ -n "${EPOCHS:-}" ] && args+=(--epochs "$EPOCHS")

# 0. item vectors from the frozen encoders (cached: a second run encodes nothing)
$recsys encode "$data" --config "$config" --no-progress

# 1. our models (every run's prepared test split holds the same rows)
$recsys compare "${args[@]}" || echo "reproduce.sh: some runs failed; the report lists them" >&2

# 2. the peers on the same rows
bash benchmarks/peers/setup_fuxictr.sh
prepared=$(ls -d "$out"/train/*/prepared | head -n 1)
$py benchmarks/peers/to_fuxictr.py "$prepared" --out "$peer"
n_seeds=$(echo "$seeds" | tr ',' '\n' | wc -l)
[ "$n_seeds" -eq 1 ] && peer_seeds=$(seq -s, 0 $((seeds - 1))) || peer_seeds=$seeds
for m in din dnn; do
  [ -f "$peer/fuxictr_$m.json" ] || benchmarks/peers/.venv-fuxictr/bin/python benchmarks/peers/run_fuxictr.py --model "$m" \
    "$peer" --seeds "$peer_seeds" --save-predictions
done

# 3. the report with the peer rows (every run reused, evaluated again with the current evaluation code)
$recsys compare "${args[@]}" --peer-results "$peer/fuxictr_din.json" --peer-results "$peer/fuxictr_dnn.json" \
  --reevaluate --no-progress

dest=docs/results/$name
rm -rf "$dest" && mkdir -p "$dest"
cp -r "$out/report.md" "$out/report.html" "$out/results.json" "$out/plots" "$dest/"
echo "reproduce.sh: report in $dest/report.md"
