#!/usr/bin/env bash
# The reconnect storm (issue 13): N persistent sessions on one node of a 3-node loopback
# cluster, that node SIGKILLed, all N clients reconnecting at once over the survivors.
#
#   benches/storm.sh [--rates "off 2000"] [--interval-ms MS] [N...]      (N default 5000)
#
# For each N and each max_connect_rate ("off": none), runs benches/failover.sh twice
# (the leader killed, then a follower) with N subscribers (QoS 1, clean session 0) and a
# publisher on a survivor (QoS 1 every MS ms, default 2000). Reports per run the time
# from the kill to the last CONNACK with session present (p50, p99), resumes per second,
# the survivors' peak RSS and CPU seconds from the kill until all resumed, and the lost
# acknowledged messages (must be 0). N is bounded by the open-files limit: the loadgen
# holds N + a few descriptors, the victim N, a survivor about N/2 after the storm.
# Writes benches/results/<UTC date>/storm/n<N>-rate<R>/ (failover.sh's output) and
# storm/summary.txt, all the runs' summaries together. The nodes' logs are kept without
# their per-client "client connected/disconnected" lines.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
rates="off 2000" interval=2000
while [ $# -gt 0 ]; do
    case $1 in
    -h | --help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --rates) rates=${2:-}; shift 2 || exit 2 ;;
    --interval-ms) interval=${2:-}; shift 2 || exit 2 ;;
    *) break ;;
    esac
done
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(5000)
limit=$(ulimit -n)
for n in "${sizes[@]}"; do
    case $n in '' | *[!0-9]*) echo "storm.sh: N must be a number, not $n" >&2; exit 2 ;; esac
    [ "$n" -lt $((limit - 200)) ] || { echo "storm.sh: N=$n is too close to the open-files limit $limit" >&2; exit 2; }
done

OUT=$ROOT/benches/results/$(date -u +%F)/storm
mkdir -p "$OUT"
for n in "${sizes[@]}"; do
    for rate in $rates; do
        flags=(--out "storm/n$n-rate$rate")
        [ "$rate" = off ] || flags+=(--max-connect-rate "$rate")
        # Set-up of thousands of sessions plus the storm: more than the default 300 s.
        LOADGEN_TIMEOUT=900 "$ROOT/benches/failover.sh" "${flags[@]}" 2 -- \
            --subscribers "$n" --interval-ms "$interval" --warmup 3 \
            --resume-timeout 300 --drain-timeout 120 || true
    done
done
# One INFO line per client connect and disconnect is megabytes per run: keep the rest.
for log in "$OUT"/n*-rate*/run*-node*.log; do
    [ -f "$log" ] || continue
    grep -v 'broker_core::connection: client \(connected\|disconnected\)' "$log" >"$log.tmp" || true
    mv "$log.tmp" "$log"
done
{
    echo "reconnect storm, $(date -u +%F), $(nproc) cores, open-files limit $limit"
    echo "command: benches/storm.sh --rates \"$rates\" --interval-ms $interval ${sizes[*]}"
    for n in "${sizes[@]}"; do
        for rate in $rates; do
            echo
            echo "=== N=$n max_connect_rate=$rate ==="
            cat "$OUT/n$n-rate$rate/summary.txt" 2>/dev/null || echo "(no summary)"
        done
    done
} >"$OUT/summary.txt"
echo "results in $OUT/summary.txt" >&2
