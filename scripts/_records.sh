# Shared by the results_*.sh scripts: the published run records (config.json, results.json, metrics.csv of every
# finished run, and each grid's summary and figures) kept in the repository under docs/runs/.
# keep_records GRID_DIR RECORD_DIR: copy the records of GRID_DIR's finished runs and its summary to RECORD_DIR.
keep_records() {
  local run dir
  for run in "$1"/*/results.json; do
    [ -f "$run" ] || continue
    dir="$(dirname "$run")"
    mkdir -p "$2/$(basename "$dir")" && cp "$dir/config.json" "$dir/results.json" "$dir/metrics.csv" "$2/$(basename "$dir")/"
  done
  for f in summary.md curves.png wall-time.png; do [ -f "$1/$f" ] && cp "$1/$f" "$2/"; done
  return 0
}
# restore_records RECORD_DIR GRID_DIR: copy the recorded runs into the grid where it lacks them, so that
# `fastweights compare` reuses them as finished runs and trains only the missing ones.
restore_records() {
  local record run
  [ -d "$1" ] || return 0
  for record in "$1"/*/results.json; do
    [ -f "$record" ] || continue
    run="$(basename "$(dirname "$record")")"
    [ -e "$2/$run" ] || { mkdir -p "$2" && cp -r "$(dirname "$record")" "$2/$run"; }
  done
}
