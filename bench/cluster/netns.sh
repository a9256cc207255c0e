#!/bin/bash
# netns.sh: simulated hosts on one machine, in Linux network namespaces.
#
#   netns.sh check  PREFIX                 can this machine do it?  0, or 77 and why
#   netns.sh up     PREFIX NDAEMONS NWORKERS
#   netns.sh down   PREFIX                 kill what runs inside, delete every namespace
#   netns.sh reap   BASE                   remove leftovers BASE-PID-* of runs whose PID is dead
#   netns.sh show   PREFIX                 the namespaces, addresses and qdiscs of PREFIX
#
# What `up` builds (nothing of it appears in the root namespace):
#
#   PREFIX-sw    the switch: a bridge br0, no address, one port per host
#   PREFIX-dI    daemon host I: eth0 = 198.18.0.(1+I)/24
#   PREFIX-wJ    worker host J: eth0 = 198.18.0.(101+J)/24
#
# Each host is joined to the switch by one veth pair (host eth0 <-> switch
# port dI/wJ).  Both ends are shaped, so each host has a full-duplex link of
# NETNS_RATE each way: token buckets (htb, see shape_cmds) for the rate and,
# when the kernel has it, netem adding half of NETNS_DELAY on each egress (a
# host-to-host packet crosses two egresses: NETNS_DELAY one way).  Kernels
# built without CONFIG_NET_SCH_NETEM get the rate only, and `up` says so.
#
# Traffic stays inside: 198.18.0.0/15 is the range reserved for benchmarking
# (RFC 2544), it exists only on this bridge, no namespace has a default
# route or any other interface than lo and eth0, nothing forwards.
#
# Environment: NETNS_RATE (tc rate, default 1gbit), NETNS_DELAY (one way,
# default 0.2ms; 0 for none), NETNS_MTU (default 1500), NETNS_QUEUE (tbf
# queue in ms of the rate, default 50).
#
# Cleanup: `up` removes what it made if any step fails (trap); callers run
# `down PREFIX` when done, on failure too.  A PREFIX made by a caller as
# BASE-PID (its own pid) lets `reap BASE` remove what a killed earlier run
# left (namespaces BASE-PID-* whose PID no longer runs) without touching a
# concurrent run's.  Only root and Debian's iproute2 are needed.
set -u

cmd=${1:-}
prefix=${2:-}
RATE=${NETNS_RATE:-1gbit}
DELAY=${NETNS_DELAY:-0.2ms}
MTU=${NETNS_MTU:-1500}
QUEUE_MS=${NETNS_QUEUE:-50}
SUBNET=198.18.0

die() { echo "netns: $*" >&2; exit 1; }
usage() { sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

valid_prefix() {
  [[ "$1" =~ ^[a-z][a-z0-9-]{0,23}$ ]] || die "prefix '$1': lower-case letters, digits and '-', at most 24"
}

# rate in bits/s from a tc rate (1gbit, 500mbit, 10Gbit, 100kbit, 123456bit)
rate_bps() {
  local r=${1,,}
  local num=${r%%[a-z]*} unit=${r##*[0-9.]}
  awk -v n="$num" -v u="$unit" 'BEGIN {
    m = (u == "gbit") ? 1e9 : (u == "mbit") ? 1e6 : (u == "kbit") ? 1e3 : (u == "bit" || u == "") ? 1 : -1;
    if (m < 0 || n <= 0) exit 1; printf "%.0f\n", n * m }'
}

# half of a delay like 0.2ms / 200us, as microseconds
half_delay_us() {
  local d=${1,,}
  awk -v d="$d" 'BEGIN {
    if (d == "0" || d == "") { print 0; exit }
    n = d + 0; u = d; sub(/^[0-9.]+/, "", u);
    m = (u == "ms") ? 1000 : (u == "us") ? 1 : (u == "s") ? 1e6 : -1;
    if (m < 0) exit 1; printf "%.0f\n", n * m / 2 }'
}

have_netem=""
probe_netem() { # in namespace $1 on device $2
  if [ -z "$have_netem" ]; then
    if tc -n "$1" qdisc add dev "$2" root handle 9: netem delay 1us 2>/dev/null; then
      tc -n "$1" qdisc del dev "$2" root 2>/dev/null
      have_netem=yes
    else
      have_netem=no
    fi
  fi
}

# The tc commands that shape DEV to RATE: a token-bucket hierarchy (HTB)
# with two leaves.  Pure ACKs and other short packets (IP length < 128)
# go first; everything else waits in a FIFO of NETNS_QUEUE ms of the rate,
# under netem (half the delay) when the kernel has it.  Why two leaves: a
# link busy both ways (a worker pushing while it pulls) with one FIFO
# queues each flow's ACKs behind the other flow's data, and each direction
# falls to ~78% of the rate; hosts avoid that with fq/fq_codel, which this
# kind of kernel may lack (so does the one these numbers were taken on).
shape_cmds() {
  local dev=$1 bps burst limit half
  bps=$(rate_bps "$RATE")
  # burst: 1 ms of the rate, at least one 64 KiB GSO packet plus a frame
  burst=$(( bps / 8000 )); [ "$burst" -lt $((65536 + MTU + 100)) ] && burst=$((65536 + MTU + 100))
  limit=$(( bps / 8 * QUEUE_MS / 1000 + burst ))
  half=$(half_delay_us "$DELAY")
  echo "tc qdisc add dev $dev root handle 1: htb default 20 r2q 1000"
  echo "tc class add dev $dev parent 1: classid 1:1 htb rate ${bps}bit ceil ${bps}bit burst $burst cburst $burst"
  echo "tc class add dev $dev parent 1:1 classid 1:10 htb rate $((bps / 20))bit ceil ${bps}bit prio 0 burst $burst cburst $burst"
  echo "tc class add dev $dev parent 1:1 classid 1:20 htb rate $((bps - bps / 20))bit ceil ${bps}bit prio 1 burst $burst cburst $burst"
  echo "tc qdisc add dev $dev parent 1:10 handle 10: pfifo limit 1000"
  if [ "$half" -gt 0 ] && [ "$have_netem" = yes ]; then
    echo "tc qdisc add dev $dev parent 1:20 handle 20: netem delay ${half}us limit $(( limit / MTU + 100 ))"
  else
    echo "tc qdisc add dev $dev parent 1:20 handle 20: bfifo limit $limit"
  fi
  echo "tc filter add dev $dev parent 1: protocol ip prio 1 u32 match u16 0x0000 0xff80 at 2 flowid 1:10"
}


namespaces_of() { # every namespace named PREFIX-*
  ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^$1-(sw|d[0-9]+|w[0-9]+|probe)$" || true
}

do_down() {
  local p=$1 ns pids
  for ns in $(namespaces_of "$p"); do
    pids=$(ip netns pids "$ns" 2>/dev/null)
    [ -n "$pids" ] && kill -TERM $pids 2>/dev/null
  done
  for ns in $(namespaces_of "$p"); do
    for _ in 1 2 3 4 5 6 7 8 9 10; do
      [ -z "$(ip netns pids "$ns" 2>/dev/null)" ] && break
      sleep 0.2
    done
    pids=$(ip netns pids "$ns" 2>/dev/null)
    [ -n "$pids" ] && kill -KILL $pids 2>/dev/null
    ip netns del "$ns" 2>/dev/null || ip netns del "$ns" 2>/dev/null
  done
  [ -z "$(namespaces_of "$p")" ] || { echo "netns: could not remove all of $p-*" >&2; return 1; }
}

do_check() {
  local p=${1:-dscprobe-$$}
  [ "$(id -u)" -eq 0 ] || { echo "netns: needs root (network namespaces and tc)"; exit 77; }
  command -v ip >/dev/null 2>&1 || { echo "netns: no 'ip' command (Debian: iproute2)"; exit 77; }
  command -v tc >/dev/null 2>&1 || { echo "netns: no 'tc' command (Debian: iproute2)"; exit 77; }
  local ns=$p-probe err
  if ! err=$(ip netns add "$ns" 2>&1); then
    echo "netns: network namespaces are not allowed here: ip netns add: $err"; exit 77
  fi
  trap 'ip netns del "$ns" 2>/dev/null' EXIT
  if ! err=$(ip -n "$ns" link add pa type veth peer name pb 2>&1); then
    echo "netns: no veth pairs: $err"; exit 77
  fi
  if ! err=$(ip -n "$ns" link add pbr type bridge 2>&1); then
    echo "netns: no bridges: $err"; exit 77
  fi
  probe_netem "$ns" pa
  if ! err=$(shape_cmds pa | sed 's/^tc //' | tc -n "$ns" -b - 2>&1); then
    echo "netns: cannot shape a link (tc htb, pfifo, bfifo, u32): $err"; exit 77
  fi
  echo "netns: ok (htb yes, netem $have_netem)"
  exit 0
}

do_up() {
  local p=$1 nd=$2 nw=$3 i kind n base ns port ip hosts="" batch script
  [[ "$nd" =~ ^[0-9]+$ && "$nw" =~ ^[0-9]+$ ]] || die "up PREFIX NDAEMONS NWORKERS"
  [ "$nd" -ge 1 ] && [ "$nd" -le 90 ] && [ "$nw" -le 100 ] || die "1-90 daemons, 0-100 workers"
  [ -z "$(namespaces_of "$p")" ] || die "namespaces $p-* exist already (netns.sh down $p)"
  rate_bps "$RATE" >/dev/null || die "NETNS_RATE '$RATE' is not a tc rate such as 1gbit"
  half_delay_us "$DELAY" >/dev/null || die "NETNS_DELAY '$DELAY' is not a delay such as 0.2ms"
  trap 'echo "netns: setting up $p failed; removing it" >&2; do_down "$p"; exit 1' ERR
  set -E
  local sw=$p-sw
  for kind in d w; do
    n=$nd; base=1
    [ $kind = w ] && { n=$nw; base=101; }
    for ((i = 0; i < n; i++)); do hosts="$hosts $kind$i:$SUBNET.$((base + i))"; done
  done
  # every namespace and veth pair in one batch, each end created where it lives
  batch="netns add $sw"$'\n'
  for h in $hosts; do batch="${batch}netns add $p-${h%%:*}"$'\n'; done
  for h in $hosts; do
    port=${h%%:*}
    batch="${batch}link add name $port mtu $MTU netns $sw type veth peer name eth0 mtu $MTU netns $p-$port"$'\n'
  done
  printf '%s' "$batch" | ip -b -
  # the switch: a bridge of every port, each port shaped towards its host.
  # One `ip -b` and one `tc -b` per namespace (a loaded machine forks slowly);
  # addrgenmode none: no IPv6 addresses, so only the traffic we send.
  batch="link set lo up"$'\n'"link add br0 type bridge"$'\n'
  batch="${batch}link set dev br0 addrgenmode none"$'\n'"link set br0 mtu $MTU up"$'\n'
  for h in $hosts; do
    port=${h%%:*}
    batch="${batch}link set dev $port addrgenmode none"$'\n'"link set $port master br0 up"$'\n'
  done
  printf '%s' "$batch" | ip -n "$sw" -b -
  probe_netem "$sw" br0
  batch=""
  for h in $hosts; do batch="$batch$(shape_cmds "${h%%:*}")"$'\n'; done
  printf '%s' "$batch" | sed 's/^tc //' | tc -n "$sw" -b -
  # each host: its address, its egress shaped towards the switch
  for h in $hosts; do
    port=${h%%:*} ip=${h#*:} ns=$p-${h%%:*}
    printf '%s\n' "link set lo up" "link set dev eth0 addrgenmode none" "addr add $ip/24 dev eth0" \
      "link set eth0 up" | ip -n "$ns" -b -
    shape_cmds eth0 | sed 's/^tc //' | tc -n "$ns" -b -
    echo "host $port ns=$ns ip=$ip"
  done
  trap - ERR
  local half delay_note
  half=$(half_delay_us "$DELAY")
  delay_note="netem ${half}us per egress ($DELAY one way)"
  [ "$have_netem" = yes ] || delay_note="no delay: this kernel has no netem (CONFIG_NET_SCH_NETEM)"
  [ "$half" = 0 ] && delay_note="no delay asked"
  echo "links: $RATE each way per host, htb with ACKs first; $delay_note; mtu $MTU; subnet $SUBNET.0/24 on $sw/br0 only"
}

do_reap() {
  local base=$1 ns pid seen=" "
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^$base-[0-9]+-" || true); do
    pid=${ns#"$base"-}; pid=${pid%%-*}
    case "$seen" in *" $pid "*) continue ;; esac
    seen="$seen$pid "
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "netns: removing $base-$pid-* left by a run that is gone" >&2
      do_down "$base-$pid"
    fi
  done
}

do_show() {
  local ns
  for ns in $(namespaces_of "$1"); do
    echo "== $ns"
    ip -n "$ns" -br addr
    ip netns exec "$ns" tc -s qdisc show | sed 's/^/   /'
  done
}

case "$cmd" in
  check) do_check "$prefix" ;;
  up) [ $# -eq 4 ] || usage; valid_prefix "$prefix"; do_up "$prefix" "$3" "$4" ;;
  down) [ $# -eq 2 ] || usage; valid_prefix "$prefix"; do_down "$prefix" ;;
  reap) [ $# -eq 2 ] || usage; valid_prefix "$prefix"; do_reap "$prefix" ;;
  show) [ $# -eq 2 ] || usage; valid_prefix "$prefix"; do_show "$prefix" ;;
  *) usage ;;
esac
