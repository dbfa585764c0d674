# The campaign's end (sourced by benches/faults/cluster.sh): the total over
# every cycle's line in $work/results, up to five examples of each failure
# from $work/details.jsonl, and the exit status.

report() {
  local total
  total=$(awk '/^fault=/ {
      for (i = 2; i <= NF; i++) { split($i, kv, "="); sum[kv[1]] += kv[2] }
    } END {
      n = split("conversions missing disagreeing wrong late wrong_late unpublished failed_requests duplicates check_failed", keys, " ")
      line = "total"
      for (i = 1; i <= n; i++) line = line " " keys[i] "=" sum[keys[i]] + 0
      print line
    }' "$work/results")
  echo "$total"
  # Late records that differ are outside the fleet's promise; STRICT_LATE=1
  # fails on them too.
  local fail='missing|disagreeing|wrong|unpublished|check_failed'
  [ "${STRICT_LATE:-}" = 1 ] && fail="$fail|wrong_late"
  if echo "$total" | grep -qE " ($fail)=[1-9]"; then
    examples
    return 1
  fi
}

# Up to five of each kind: conversion id, where it sits, and the fields in
# which got and want differ; a missing one with the members' log lines that
# read it (trace level).
examples() {
  [ -s "$work/details.jsonl" ] || return 0
  python3 - "$work/details.jsonl" "$work" <<'PY'
import glob, json, re, sys
shown = {}
for line in open(sys.argv[1]):
    d = json.loads(line)
    e = d["example"]
    what = e["what"]
    if shown.get(what, 0) >= 5:
        continue
    shown[what] = shown.get(what, 0) + 1
    at = e["at"]
    print(f"{what}: conversion={e['conversion']} cycle={d['cycle']} fault={d['fault']} "
          f"partition={at['partition']} offset={at['offset']} ts={at['ts']}")
    got, want = e["got"], e["want"] or {}
    if what in ("wrong", "wrong_late"):
        keys = [k for k in want if k != "late" and got.get(k) != want.get(k)]
        print("  got: ", json.dumps({k: got.get(k) for k in keys + ["late"]}))
        print("  want:", json.dumps({k: want.get(k) for k in keys}))
    elif what == "disagreeing":
        for r in got:
            keys = ("counted", "attributed", "kind", "reason", "touch_event_id", "event_id", "late")
            print("  record:", json.dumps({k: r.get(k) for k in keys}))
    else:
        needle = re.compile(rf"partition={at['partition']} offset={at['offset']}( |$)")
        for path in sorted(glob.glob(sys.argv[2] + "/member-*.log")):
            for l in open(path, errors="replace"):
                if needle.search(l):
                    print(f"  {path.rsplit('/', 1)[1]}: {l.rstrip()[:300]}")
PY
}
