# The campaign's faults (sourced by benches/faults/cluster.sh): fault_NAME K
# injects fault NAME in cycle K and waits until the fleet should be whole
# again. Odd and even cycles hit different member slots, so that over a long
# run both the first and the replacement members are hit.

victim() { echo $(($1 % 2 + 1)); }

fault_kill9() {
  local slot pid
  slot=$(victim "$1")
  pid=${MEMBER_PID[$slot]}
  kill -9 "$pid" 2>/dev/null || say "NOTE: member pid $pid had already exited"
  wait "$pid" 2>/dev/null || true
  say "kill -9 of member pid $pid (slot $slot)"
  sleep 1
  start_member "$slot"
  member_ready "$slot"
}

# Longer than the session timeout (10 s): the group gives its partitions
# away while it still believes it owns them; on SIGCONT it must find out.
fault_stop() {
  local slot pid
  slot=$(victim "$1")
  pid=${MEMBER_PID[$slot]}
  kill -STOP "$pid" 2>/dev/null || say "NOTE: member pid $pid had already exited"
  say "SIGSTOP of member pid $pid (slot $slot) for $STOP_SECONDS s"
  sleep "$STOP_SECONDS"
  kill -CONT "$pid" 2>/dev/null || true
  say "SIGCONT of member pid $pid"
  member_ready "$slot"
}

fault_join() {
  start_member 3
  member_ready 3
  sleep 10
  stop_member 3
  unset 'MEMBER_PID[3]' 'MEMBER_PORT[3]'
}

fault_term() {
  local slot
  slot=$(victim "$1")
  stop_member "$slot"
  start_member "$slot"
  member_ready "$slot"
}

# The same port and the same sqlite file: what the broker had acknowledged
# must still be there. A crash (SIGKILL) by default: on SIGTERM tansu 0.6.0's
# storage task panics while requests are still served (service.rs:337,
# "entered unreachable code" in update_group) and the restarted broker
# panics at the first idempotent produce ("more or less than one row",
# lite.rs:503), after which it answers every request with an error; the
# campaign would then measure tansu, not pixeld (BROKER_SIGNAL=TERM shows it).
fault_broker() {
  stop_tansu
  say "tansu stopped"
  sleep 3
  start_tansu
}
