#!/usr/bin/env bash
# Reproduces the published MNIST numbers a CPU can reach (docs/results.md, "Paper rows"): each row's
# spec once per seed, then `results` over the seeds (mean ± sample std). Runs that finished are kept
# (a run directory with result.json is not run again), so an interrupted reproduction goes on: the
# actors' rows resume an interrupted seed where it stopped, the engine loop's (hinton, table1-kd) start it again.
#
#   scripts/reproduce-paper.sh [ROW ...]     rows: hinton dafl-hinton dafl-hinton-hour table1-kd noise dafl-hour (default: all)
#   SEEDS="1 2 3" RUNS=runs/paper scripts/reproduce-paper.sh hinton
set -euo pipefail
cd "$(dirname "$0")/.."
all_rows=(hinton dafl-hinton dafl-hinton-hour table1-kd noise dafl-hour)
usage() { sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; }
seeds=${SEEDS:-1 2 3}
runs=${RUNS:-runs/paper}
rows=("$@")
[ ${#rows[@]} -gt 0 ] || rows=("${all_rows[@]}")
# every row named is checked before anything is built or run
for row in "${rows[@]}"; do
  case $row in
    -h|--help) usage; exit 0 ;;
    hinton|dafl-hinton|dafl-hinton-hour|table1-kd|noise|dafl-hour) ;;
    *) echo "unknown row '$row' (rows: ${all_rows[*]})" >&2; usage >&2; exit 2 ;;
  esac
done
dotnet build src/Cluster.Seed -c Release -nologo -v quiet
exe=src/Cluster.Seed/bin/Release/net10.0/Cluster.Seed
mkdir -p "$runs"

# row -> spec, extra run options, the result.json numbers to tabulate
spec_of() { case $1 in
  hinton) echo specs/hinton-mnist.yaml ;;           # teacher, student alone and distilled in one run
  dafl-hinton) echo specs/dafl-hinton-mnist.yaml ;;
  dafl-hinton-hour) echo specs/dafl-hinton-hour.yaml ;;
  table1-kd) echo specs/dafl-table1-kd.yaml ;;
  noise) echo specs/noise-mnist.yaml ;;
  dafl-hour) echo specs/dafl-mnist-hour.yaml ;;
  *) echo "unknown row '$1' (rows: hinton dafl-hinton dafl-hinton-hour table1-kd noise dafl-hour)" >&2; exit 2 ;;
esac; }
# these rows' figures were made with the engine loop (the actors give the same numbers: RealDataPipelineTests; their baseline is a run of its own)
options_of() { case $1 in hinton|table1-kd) echo --engine ;; *) echo ;; esac; }
metrics_of() { case $1 in
  hinton) echo teacher_test_errors baseline_test_errors student_test_errors teacher_accuracy baseline_accuracy student_accuracy wall_seconds ;;
  table1-kd) echo teacher_accuracy baseline_accuracy student_accuracy wall_seconds ;;
  *) echo teacher_accuracy student_accuracy validation_accuracy best_student_accuracy wall_seconds ;;
esac; }

for row in "${rows[@]}"; do
  spec=$(spec_of "$row")
  dirs=()
  for s in $seeds; do
    id="$(basename "$spec" .yaml)-s$s"
    dirs+=("$runs/$id")
    if [ -f "$runs/$id/result.json" ]; then echo "[paper] $id: done before"; continue; fi
    # the engine loop does not resume: an interrupted run of those rows starts again
    if [ -n "$(options_of "$row")" ] && [ -d "$runs/$id" ]; then
      echo "[paper] $id: interrupted before (the engine loop cannot resume it): starting it again"
      rm -rf "${runs:?}/$id"
    fi
    echo "[paper] $id: $exe run $spec --seed $s $(options_of "$row")"
    # shellcheck disable=SC2046
    "$exe" run "$spec" --seed "$s" --runs-dir "$runs" --run-id "$id" $(options_of "$row") | tee "$runs/$id.log" | grep '^\[result\]\|^\[teacher\] [0-9]* test errors\|interrupted\|^error' || true
    if [ ! -f "$runs/$id/result.json" ]; then echo "[paper] $id did not finish (its output: $runs/$id.log); run the script again to go on" >&2; exit 1; fi
  done
  for m in $(metrics_of "$row"); do
    echo "[paper] $row: $m over seeds $seeds"
    "$exe" results "${dirs[@]}" --metric "$m" --out "$runs/$row-$m" | grep -v '^\[results\]'
  done
done
