#!/bin/bash
# Runs as PID 1 inside the qemu guest started by run.sh, on the host's root filesystem
# (read-only 9p) with tmpfs /tmp and /run, and the results share at /run/cgv2.
# Writes one line per check to /run/cgv2/results.txt (and the console):
#   PASS <id>: <detail> | FAIL <id>: <detail> | INFO <id>: <detail>, then DONE.
set -uo pipefail
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8
R=/run/cgv2
RES=$R/results.txt
: >"$RES"
# shellcheck disable=SC1091
. "$R/env" # PADDOCK=...
CG=/sys/fs/cgroup
DATA=/tmp/paddock-data
MEM=$((64 << 20))
PIDS=20
CPUS=0.5
CPU_MAX="50000 100000"

say() { echo "$*" | tee -a "$RES"; }
# Each result line ends with the seconds its check took.
LAST=$SECONDS
result() { # KIND ID DETAIL
    local d=$((SECONDS - LAST))
    LAST=$SECONDS
    say "$1 $2: $3 [${d}s]"
}
pass() { result PASS "$@"; }
fail() { result FAIL "$@"; }
info() { result INFO "$@"; }
# Squashes a file into one line for a result detail.
oneline() { tr '\n' ' ' <"$1" | sed 's/  */ /g; s/ $//' | cut -c1-600; }

helpers=()
finish() {
    kill "${helpers[@]}" 2>/dev/null
    say "DONE"
    dmesg >"$R/dmesg.txt" 2>&1
    sync
    echo o >/proc/sysrq-trigger
    sleep 10
    exit 0
}

[[ -e /proc/self/mountinfo ]] || { echo "cgv2: FATAL: no /proc in the guest"; sync; exit 1; }
mount -t devpts -o newinstance,ptmxmode=0666 devpts /dev/pts 2>/dev/null || true
mkdir -p /dev/shm && mount -t tmpfs -o mode=1777 shm /dev/shm
mount -t cgroup2 -o nsdelegate cgroup2 "$CG" || { fail pure-cgroup2 "cannot mount cgroup2 at $CG"; finish; }
echo "+memory +pids +cpu" >"$CG/cgroup.subtree_control" ||
    { fail pure-cgroup2 "cannot enable +memory +pids +cpu in the root cgroup"; finish; }
mkdir -p "$DATA"
ip link set lo up # for paddock serve
# The kernel log reaches the host even if the guest hangs later (run.sh shows it on failure).
(while sleep 10; do dmesg >"$R/dmesg.txt.new" 2>&1 && mv "$R/dmesg.txt.new" "$R/dmesg.txt"; done) &
helpers=($!)
if [[ ${CGV2_DEBUG:-0} == 1 ]]; then
    # Every 20 s: memory pressure and the processes that are running or blocked; sysrq-w once
    # a minute, so a hang leaves its stacks in the console log.
    echo 1 >/proc/sys/kernel/sysrq
    (
        n=0
        while sleep 20; do
            n=$((n + 1))
            echo "cgv2-debug: t=$SECONDS mem: $(head -1 /proc/pressure/memory) $(grep -E '^(MemFree|Cached)' /proc/meminfo | tr -s ' ' | tr '\n' ' ')"
            for st in /proc/[0-9]*/stat; do
                read -r pid comm state _ <"$st" 2>/dev/null || continue
                [[ $state == [RD] ]] && echo "cgv2-debug:   $pid $comm $state $(cat "/proc/$pid/cgroup" 2>/dev/null)"
            done
            ((n % 3 == 0)) && echo w >/proc/sysrq-trigger
        done
    ) &
    helpers+=($!)
fi
echo "cgv2: guest $(uname -r), paddock $("$PADDOCK" --version 2>&1)"

# Read the programs the sandboxed commands run (and their libraries) once from here, the root
# cgroup: page cache is charged to the cgroup that first reads it, so the sandboxes then map
# these pages without charging them, and a memory hog at its limit has no file pages of its own
# to thrash on (refaulting them over 9p under TCG can keep reclaim "making progress" for minutes
# instead of OOM-killing). The limits still hold all that the commands allocate.
progs=(/usr/bin/bash /usr/bin/head /usr/bin/tail /usr/bin/sleep /usr/bin/timeout "$(readlink -f /usr/bin/python3)")
# shellcheck disable=SC2046 # one path per word
cat "${progs[@]}" $(ldd "${progs[@]}" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// && $1 !~ /:$/ {print $1}' | sort -u) >/dev/null
LAST=$SECONDS
cfg=/tmp/limits.yaml
cat >"$cfg" <<EOF
sandbox:
  exec_timeout_secs: 120
  limits:
    memory_bytes: $MEM
    pids: $PIDS
    cpus: $CPUS
EOF

# Starts paddock in the background as the only process of a new cgroup $CG/$1: a bash that
# moves itself into the cgroup and execs paddock, so $P is paddock's own pid.
#   start_alone CGNAME TAG ARGS...   (stdout/stderr in $R/TAG.out, $R/TAG.err)
start_in() { # CGDIR TAG ARGS...
    local dir=$1 tag=$2
    shift 2
    bash -c 'echo $$ >"$0/cgroup.procs" || exit 97; exec "$@"' "$dir" "$PADDOCK" "$@" \
        >"$R/$tag.out" 2>"$R/$tag.err" </dev/null &
    P=$!
}
start_alone() { # CGNAME TAG ARGS...
    local dir=$CG/$1
    mkdir "$dir" || return 1
    start_in "$dir" "${@:2}"
}
# Waits for $P with a deadline (seconds); sets RC (paddock's exit status, 255 on timeout).
wait_p() {
    local deadline=$((SECONDS + $1))
    while kill -0 "$P" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
    if kill -0 "$P" 2>/dev/null; then
        kill -KILL "$P"
        wait "$P" 2>/dev/null
        RC=255
    else
        wait "$P" 2>/dev/null
        RC=$?
    fi
}
# Exec cgroups of paddock pid $2 below cgroup dir $1 (everything but the supervisor leaf).
exec_cgroups() {
    local d
    for d in "$1"/paddock-"$2"-*; do
        [[ -d $d && $d != "$1/paddock-$2-supervisor" ]] && echo "$d"
    done
}
populated_exec_cgroup() { # DIR PID -> the exec cgroup of paddock PID below DIR once init is in it
    # (the limits are written before init is cloned; cgroupfs files have size 0, so read it);
    # empty when PID ends or 60 s pass first.
    local d deadline=$((SECONDS + 60))
    while kill -0 "$2" 2>/dev/null && ((SECONDS < deadline)); do
        for d in $(exec_cgroups "$1" "$2"); do
            [[ -n $(cat "$d/cgroup.procs" 2>/dev/null) ]] && { echo "$d"; return; }
        done
        sleep 0.1
    done
}
cgls() { # DIR -> the cgroup directories below it, relative, one line
    (cd "$1" && find . -mindepth 1 -type d | sort | tr '\n' ' ')
}
no_fallback_warnings() { # ERRFILE -> 0 when paddock did not fall back to rlimits
    ! grep -qE 'falling back to rlimits|no usable cgroup|Delegate=yes' "$1"
}
ex() { EX=(exec --data-dir "$DATA" --user u --thread "$1" --timeout 120); } # -> EX

# --- 1. pure cgroup2 ---------------------------------------------------------------------------
v1=$(awk '$3 == "cgroup"' /proc/mounts)
v2=$(awk -v cg="$CG" '$3 == "cgroup2" && $2 == cg' /proc/mounts)
ctrl=$(cat "$CG/cgroup.controllers")
selfcg=$(cat /proc/self/cgroup)
missing=""
for c in memory pids cpu; do
    grep -qw "$c" <<<"$ctrl" || missing+=" $c"
done
if [[ -z $v1 && -n $v2 && -z $missing && $selfcg == "0::/" ]]; then
    pass pure-cgroup2 "no cgroup v1 mount; cgroup2 at $CG; cgroup.controllers: $ctrl; /proc/self/cgroup: $selfcg"
else
    fail pure-cgroup2 "v1 mounts: [${v1//$'\n'/; }] cgroup2: [$v2] controllers: [$ctrl] missing: [$missing] self: [$selfcg]"
fi

# --- 2. memory limit: OOM kill, 137, reported ---------------------------------------------------
ex mem
start_alone t-mem mem "${EX[@]}" --config "$cfg" -- 'head -c 200M /dev/zero | tail'
pm_=$P
wait_p 180
mleft=$(exec_cgroups "$CG/t-mem" "$pm_" | tr '\n' ' ')
if [[ $RC == 137 && -z $mleft ]] && grep -q 'memory limit was exceeded' "$R/mem.err" && no_fallback_warnings "$R/mem.err"; then
    pass memory-oom "memory_bytes=$MEM: exit $RC, exec cgroup removed, stderr: $(oneline "$R/mem.err")"
else
    fail memory-oom "memory_bytes=$MEM: exit $RC (want 137 and 'memory limit was exceeded'), left exec cgroups: [$mleft], stderr: $(oneline "$R/mem.err")"
fi

# --- 3. pids limit: a fork loop stops below it --------------------------------------------------
# No single quotes in the program: it is passed inside '...' to the sandbox's shell.
forkpy='
import errno, os, time
n, err = 0, "none"
for i in range(50):
    try:
        pid = os.fork()
    except OSError as e:
        err = errno.errorcode.get(e.errno, str(e.errno))
        break
    if pid == 0:
        time.sleep(4)
        os._exit(0)
    n += 1
print("forked=%d error=%s" % (n, err), flush=True)
for _ in range(n):
    os.wait()
'
ex pids
start_alone t-pids pids "${EX[@]}" --config "$cfg" -- "python3 -c '$forkpy'"
pid_p=$P
# While the children sleep, read the exec cgroup's pids counters.
seen=""
deadline=$((SECONDS + 120))
while kill -0 "$P" 2>/dev/null && ((SECONDS < deadline)); do
    for d in $(exec_cgroups "$CG/t-pids" "$pid_p"); do
        cur=$(cat "$d/pids.current" 2>/dev/null) && max=$(cat "$d/pids.max" 2>/dev/null) &&
            ev=$(sed -n 's/^max //p' "$d/pids.events" 2>/dev/null) || continue
        # Keep the fullest sample that saw a refused fork.
        if [[ -n $cur && -n $max && -n $ev && $ev != 0 ]] && ((cur >= ${best:-0})); then
            best=$cur
            seen="$(basename "$d"): pids.max=$max pids.current=$cur pids.events max=$ev"
        fi
    done
    sleep 0.3
done
wait_p 60
pleft=$(exec_cgroups "$CG/t-pids" "$pid_p" | tr '\n' ' ')
forked=$(sed -n 's/^forked=\([0-9]*\) error=.*/\1/p' "$R/pids.out")
ferr=$(sed -n 's/^forked=[0-9]* error=\(.*\)/\1/p' "$R/pids.out")
if [[ $RC == 0 && -n $forked && $forked -lt $PIDS && $forked -ge $((PIDS / 2)) && $ferr == EAGAIN && -n $seen && -z $pleft ]] &&
    no_fallback_warnings "$R/pids.err"; then
    pass pids-limit "pids=$PIDS: fork loop of 50 got $forked children then $ferr; live: $seen"
else
    fail pids-limit "pids=$PIDS: exit $RC, stdout: $(oneline "$R/pids.out"), live counters: [${seen:-none seen with max>0}], left exec cgroups: [$pleft], stderr: $(oneline "$R/pids.err")"
fi

# --- 4/5. the exec cgroup while a command runs, and after ---------------------------------------
T=$CG/t-live
ex live
start_alone t-live live "${EX[@]}" --config "$cfg" -- 'echo "rlimits $(ulimit -v) $(ulimit -u)"; sleep 3; echo slept'
pl=$P
found=$(populated_exec_cgroup "$T" "$pl")
if [[ -n $found ]]; then
    name=$(basename "$found")
    sup=$T/paddock-$pl-supervisor
    mm=$(cat "$found/memory.max")
    pm=$(cat "$found/pids.max")
    cm=$(cat "$found/cpu.max")
    sm=$(cat "$found/memory.swap.max" 2>/dev/null || echo absent)
    procs=$(tr '\n' ' ' <"$found/cgroup.procs")
    own=$(cat "/proc/$pl/cgroup" 2>/dev/null)
    supprocs=$(tr '\n' ' ' <"$sup/cgroup.procs" 2>/dev/null)
    tsc=$(cat "$T/cgroup.subtree_control")
    layout=$(cgls "$T")
    why=""
    [[ $name =~ ^paddock-$pl-[0-9]+-x[0-9]+$ ]] || why+=" name $name is not paddock-$pl-<n>-x<m>;"
    [[ -d $sup ]] || why+=" no $sup;"
    [[ $own == "0::/t-live/paddock-$pl-supervisor" ]] || why+=" paddock's /proc/pid/cgroup is '$own';"
    [[ $supprocs == "$pl " ]] || why+=" supervisor cgroup.procs is '$supprocs';"
    [[ $mm == "$MEM" ]] || why+=" memory.max=$mm;"
    [[ $pm == "$PIDS" ]] || why+=" pids.max=$pm;"
    [[ $cm == "$CPU_MAX" ]] || why+=" cpu.max=$cm;"
    [[ $sm == 0 || $sm == absent ]] || why+=" memory.swap.max=$sm;"
    [[ -z $(tr -d ' ' <<<"$(cat "$T/cgroup.procs")") ]] || why+=" $T still has processes of its own;"
    detail="cgroups below /t-live: $layout| $name: memory.max=$mm pids.max=$pm cpu.max='$cm' memory.swap.max=$sm cgroup.procs=[$procs]; paddock (pid $pl) in ${own#0::}; /t-live subtree_control: $tsc"
    if [[ -z $why ]]; then pass exec-cgroup-live "$detail"; else fail exec-cgroup-live "$why $detail"; fi
else
    fail exec-cgroup-live "no exec cgroup paddock-$pl-*-x* with a process in it appeared below $T; saw: $(cgls "$T"); stderr: $(oneline "$R/live.err")"
fi
wait_p 120
after=$(cgls "$T")
left=$(exec_cgroups "$T" "$pl" | tr '\n' ' ')
rl=$(sed -n 's/^rlimits //p' "$R/live.out")
if [[ $RC == 0 ]] && grep -q slept "$R/live.out" && [[ -z $left ]] && no_fallback_warnings "$R/live.err"; then
    pass exec-cgroup-removed "exit $RC; left below /t-live after exit: ${after:-nothing} (the supervisor leaf may remain)"
else
    fail exec-cgroup-removed "exit $RC, stdout: $(oneline "$R/live.out"), left exec cgroups: [${left}], all: [$after], stderr: $(oneline "$R/live.err")"
fi

# With working cgroups the rlimit fallbacks stay off: no RLIMIT_AS, and RLIMIT_NPROC not the pids limit.
if [[ $rl == "unlimited "* && $rl != *" $PIDS" ]]; then
    pass no-rlimit-fallback "inside the sandbox: ulimit -v / -u = $rl (the cgroup holds the limits)"
else
    fail no-rlimit-fallback "inside the sandbox: ulimit -v / -u = '$rl' (want unlimited, and not $PIDS)"
fi

# --- cpu.max is enforced: a busy loop is throttled to about 0.5 CPU ------------------------------
ex cpu
start_alone t-cpu cpu "${EX[@]}" --config "$cfg" -- 'timeout 4 bash -c "while :; do :; done"; echo spun'
pc=$P
stat=""
deadline=$((SECONDS + 60))
while kill -0 "$pc" 2>/dev/null && ((SECONDS < deadline)); do
    for d in $(exec_cgroups "$CG/t-cpu" "$pc"); do
        st=$(cat "$d/cpu.stat" 2>/dev/null) && [[ -n $st ]] && stat=$st name=$(basename "$d")
    done
    sleep 0.3
done
wait_p 60
thr=$(awk '$1 == "nr_throttled" {print $2}' <<<"$stat")
per=$(awk '$1 == "nr_periods" {print $2}' <<<"$stat")
use=$(awk '$1 == "usage_usec" {print $2}' <<<"$stat")
# At 0.5 CPU a period of 100 ms allows 50 ms: usage/periods must stay near or below 50 ms.
if [[ $RC == 0 && -n $thr && $thr -gt 0 && -n $per && $per -gt 0 ]] && ((use / per <= 60000)); then
    pass cpu-throttled "cpu.max '$CPU_MAX' ($name): nr_periods=$per nr_throttled=$thr usage_usec=$use, $((use / per)) us per 100 ms period"
else
    fail cpu-throttled "exit $RC, last cpu.stat of the exec cgroup: [$(tr '\n' ' ' <<<"$stat")] stderr: $(oneline "$R/cpu.err")"
fi

# --- SIGTERM to paddock exec: the command is killed, the exec cgroup removed, exit 143 ----------
T=$CG/t-term
ex term
start_alone t-term term "${EX[@]}" --config "$cfg" -- 'sleep 60'
pt=$P
tfound=$(populated_exec_cgroup "$T" "$pt")
sleep 0.5
kill -TERM "$pt"
wait_p 60
tleft=$(exec_cgroups "$T" "$pt" | tr '\n' ' ')
if [[ -n $tfound && $RC == 143 && -z $tleft ]]; then
    pass sigterm-cleanup "exec cgroup $(basename "$tfound") held the command; after SIGTERM: exit $RC, left below /t-term: $(cgls "$T")"
else
    fail sigterm-cleanup "exec cgroup seen: [${tfound}], exit $RC (want 143), left exec cgroups: [$tleft], stderr: $(oneline "$R/term.err")"
fi

# --- the wall-clock timeout: exit 124, the exec cgroup removed -------------------------------------
start_alone t-timeout timeout exec --data-dir "$DATA" --user u --thread timeout --timeout 2 --config "$cfg" -- 'sleep 60'
pto=$P
wait_p 90
toleft=$(exec_cgroups "$CG/t-timeout" "$pto" | tr '\n' ' ')
if [[ $RC == 124 && -z $toleft ]] && grep -q 'timed out' "$R/timeout.err"; then
    pass timeout-cleanup "--timeout 2 -- sleep 60: exit $RC, left below /t-timeout: $(cgls "$CG/t-timeout"), stderr: $(oneline "$R/timeout.err")"
else
    fail timeout-cleanup "--timeout 2 -- sleep 60: exit $RC (want 124), left exec cgroups: [$toleft], stderr: $(oneline "$R/timeout.err")"
fi

# --- 6. a cgroup shared with another process: warning, rlimits, still runs -------------------------
S=$CG/t-shared
mkdir "$S"
sleep 600 &
other=$!
echo "$other" >"$S/cgroup.procs"
ex shared
start_in "$S" shared "${EX[@]}" --config "$cfg" -- 'echo ran; ulimit -v; ulimit -u'
wait_p 120
sprocs=$(tr '\n' ' ' <"$S/cgroup.procs")
slayout=$(cgls "$S")
kill "$other" 2>/dev/null
wait "$other" 2>/dev/null
# Expected rlimits: RLIMIT_AS = memory_bytes (ulimit -v prints KiB), RLIMIT_NPROC = pids.
want_v=$((MEM / 1024))
out=$(oneline "$R/shared.out")
if [[ $RC == 0 ]] && grep -q 'Delegate=yes' "$R/shared.err" && [[ $out == "ran $want_v $PIDS" ]] &&
    grep -qw "$other" <<<"$sprocs" && [[ -z $slayout ]]; then
    pass shared-cgroup-fallback "exit 0, stdout '$out' (ulimit -v = $want_v KiB, ulimit -u = $PIDS); the other process stayed in place; no cgroup created; stderr: $(oneline "$R/shared.err")"
else
    fail shared-cgroup-fallback "exit $RC, stdout '$out' (want 'ran $want_v $PIDS'), $S procs after: [$sprocs], cgroups created: [$slayout], stderr: $(oneline "$R/shared.err")"
fi

# --- paddock serve: a subtree paddock-<pid>-<n>, a cgroup sb-<k> per sandbox with slots x<m> ---
# HTTP through python3 (no curl needed): http METHOD URL [JSON] -> the response body.
http() {
    python3 - "$@" <<'PY'
import sys, urllib.request
method, url = sys.argv[1], sys.argv[2]
data = sys.argv[3].encode() if len(sys.argv) > 3 else None
req = urllib.request.Request(url, data=data, method=method,
                             headers={"X-API-Key": "k", "content-type": "application/json"})
try:
    with urllib.request.urlopen(req, timeout=120) as r:
        print(r.read().decode())
except Exception as e:
    print("http error: %s" % e)
PY
}
V=$CG/t-serve
port=18002
start_alone t-serve serve serve --config "$cfg" --data-dir /tmp/paddock-serve --listen 127.0.0.1:$port --api-key k
ps_=$P
up=""
for _ in $(seq 150); do
    grep -q listening "$R/serve.out" 2>/dev/null && up=1 && break
    kill -0 "$ps_" 2>/dev/null || break
    sleep 0.2
done
sv_why=""
sv_detail=""
if [[ -n $up ]]; then
    url=$(http POST "http://127.0.0.1:$port/api/sandboxes" '{"sandbox_id": "a1b2c3d4e5f60718", "thread_id": "t1", "user_id": "alice"}' |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["sandbox_url"])' 2>/dev/null)
    r1=$(http POST "$url/v1/shell/exec" '{"command": "echo served; echo kept > /tmp/state; cat /proc/self/cgroup"}')
    r2=$(http POST "$url/v1/shell/exec" '{"command": "head -c 200M /dev/zero | tail"}')
    r3=$(http POST "$url/v1/shell/exec" '{"command": "cat /tmp/state"}')
    # What is below the server's cgroup now: the sandbox's cgroup sb-<n> (its limits), and
    # below it a slot x<m> per command (no limits of their own).
    sub=""
    for d in "$V"/paddock-"$ps_"-[0-9]*; do [[ -d $d ]] && sub=$d; done
    sbs=""
    for d in "$sub"/sb-*; do
        [[ -d $d ]] || continue
        sbs+="$(basename "$d")[memory.max=$(cat "$d/memory.max") pids.max=$(cat "$d/pids.max") cpu.max='$(cat "$d/cpu.max")' procs=$(tr '\n' ' ' <"$d/cgroup.procs" | sed 's/ $//') slots=$(cd "$d" && ls -d x* 2>/dev/null | tr '\n' ' ')] "
    done
    sv_layout=$(cgls "$V")
    ssc=$(cat "$sub/cgroup.subtree_control" 2>/dev/null)
    grep -q '"exit_code":0' <<<"$r1" && grep -q served <<<"$r1" || sv_why+=" exec 1: $r1;"
    # A command sees only its slot of the sandbox's cgroup, never Paddock's cgroup names.
    grep -q '0::/x[0-9]' <<<"$r1" && ! grep -q paddock <<<"$r1" || sv_why+=" the command's /proc/self/cgroup: $r1;"
    grep -q '"exit_code":137' <<<"$r2" || sv_why+=" the memory hog did not exit 137: ${r2:0:300};"
    grep -q kept <<<"$r3" || sv_why+=" /tmp did not last between commands: ${r3:0:300};"
    [[ -d $V/paddock-$ps_-supervisor && -n $sub ]] || sv_why+=" no supervisor leaf and paddock-$ps_-<n> subtree;"
    [[ $ssc == *cpu* && $ssc == *memory* && $ssc == *pids* ]] || sv_why+=" subtree_control of the subtree: '$ssc';"
    [[ $sbs == *"memory.max=$MEM pids.max=$PIDS cpu.max='$CPU_MAX'"*slots=x* ]] || sv_why+=" no sandbox cgroup with the limits and slots;"
    sv_detail="cgroups below /t-serve: $sv_layout| sandbox cgroups: $sbs| subtree_control of $(basename "$sub"): $ssc"
    http DELETE "http://127.0.0.1:$port/api/sandboxes/a1b2c3d4e5f60718" >/dev/null
else
    sv_why+=" paddock serve did not come up: $(oneline "$R/serve.err");"
fi
kill -TERM "$ps_" 2>/dev/null
wait_p 60
sv_after=$(cgls "$V")
[[ $sv_after == "./paddock-$ps_-supervisor " ]] || sv_why+=" after SIGTERM: exit $RC, left: $sv_after;"
if [[ -z $sv_why ]]; then
    pass serve-subtree "$sv_detail; after SIGTERM (exit $RC) left: $sv_after"
else
    fail serve-subtree "$sv_why $sv_detail stderr: $(oneline "$R/serve.err")"
fi

# --- SIGKILL of paddock serve: no jail process outlives it -----------------------------------
K=$CG/t-serve-kill
kcfg=/tmp/kill.yaml
printf 'sandbox:\n  uid_range: null\n  sandbox_uid: 953777\n  sandbox_gid: 953777\n' >"$kcfg"
kport=18003
start_alone t-serve-kill serve-kill serve --config "$kcfg" --data-dir /tmp/paddock-serve-kill --listen 127.0.0.1:$kport --api-key k
pkk=$P
for _ in $(seq 150); do grep -q listening "$R/serve-kill.out" 2>/dev/null && break; sleep 0.2; done
kurl=$(http POST "http://127.0.0.1:$kport/api/sandboxes" '{"sandbox_id": "k1", "thread_id": "k1"}' |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["sandbox_url"])' 2>/dev/null)
http POST "$kurl/v1/shell/exec" '{"command": "sleep 600 >/dev/null 2>&1 & setsid sleep 601 >/dev/null 2>&1 & echo up"}' >"$R/serve-kill.exec"
before=$(ps -o pid= -u 953777 | wc -l)
kill -KILL "$pkk"
wait_p 30
left=""
for _ in $(seq 50); do
    left=$(ps -o pid=,args= -u 953777 | tr '\n' ';')
    [[ -z $left ]] && break
    sleep 0.1
done
if [[ $before -ge 3 && -z $left ]]; then
    pass serve-kill-no-orphans "$before processes of the sandbox uid before SIGKILL of paddock serve (init, background sleeps), none after"
else
    fail serve-kill-no-orphans "before SIGKILL: $before processes of uid 953777 (exec: $(oneline "$R/serve-kill.exec")); after: [$left]"
fi

# --- the SIGKILL-at-many-points test of the Rust suite, on cgroup v2 ----------------------------
if [[ -n ${NO_ORPHANS_TEST:-} && -x $NO_ORPHANS_TEST ]]; then
    mkdir "$CG/t-orphans"
    bash -c 'echo $$ >"$0/cgroup.procs" || exit 97; cd /tmp && exec "$@"' "$CG/t-orphans" \
        "$NO_ORPHANS_TEST" --test-threads 1 >"$R/orphans.out" 2>&1 </dev/null &
    P=$!
    wait_p 300
    if [[ $RC == 0 ]] && grep -q 'test result: ok. 2 passed' "$R/orphans.out"; then
        pass no-orphans-v2 "$(grep 'test result' "$R/orphans.out")"
    else
        fail no-orphans-v2 "exit $RC: $(tail -c 600 "$R/orphans.out" | tr '\n' ' ')"
    fi
else
    fail no-orphans-v2 "no no_orphans test binary beside $PADDOCK (run cargo test first)"
fi

# --- a cgroup Paddock delegated is given back: another Paddock can run there, and sweeps ---------
# After a clean exit Paddock disables the controllers it enabled, so the cgroup takes
# processes again; the next Paddock started there removes the first one's empty leaf.
U=$CG/t-reuse
ex reuse
start_alone t-reuse reuse1 "${EX[@]}" --config "$cfg" -- 'echo first'
pr1=$P
wait_p 120
rc1=$RC
usub=$(cat "$U/cgroup.subtree_control" 2>/dev/null)
start_in "$U" reuse2 "${EX[@]}" --config "$cfg" -- 'echo second; ulimit -v'
pr2=$P
wait_p 120
rc2=$RC
ulayout=$(cgls "$U")
out2=$(oneline "$R/reuse2.out")
if [[ $rc1 == 0 && $rc2 == 0 && -z $usub && $out2 == "second unlimited" ]] &&
    no_fallback_warnings "$R/reuse2.err" && ! grep -q "paddock-$pr1-" <<<"$ulayout"; then
    pass cgroup-reusable "first exit 0, then subtree_control '$usub'; second paddock in the same cgroup: exit 0, '$out2' (cgroup limits, no fallback), left: [$ulayout] (pid $pr1's leaf swept)"
else
    fail cgroup-reusable "first exit $rc1, subtree_control after: '$usub' (want empty); second: exit $rc2 (pid $pr2), stdout '$out2', left: [$ulayout], stderr: $(oneline "$R/reuse2.err")"
fi

# --- 7. paddock doctor -------------------------------------------------------------------------
start_alone t-doctor doctor doctor
wait_p 180
rows=$(grep -E '^cgroup (memory|pids|cpu) ' "$R/doctor.out")
okrows=$(grep -cE '^cgroup (memory|pids|cpu) +ok .*\bv2\b' <<<"$rows")
if [[ $RC == 0 && $okrows == 3 ]]; then
    pass doctor-v2 "$(tr -s ' ' <<<"$rows" | tr '\n' ';') left below /t-doctor: $(cgls "$CG/t-doctor")"
else
    fail doctor-v2 "exit $RC, cgroup rows: [$(tr -s ' ' <<<"$rows" | tr '\n' ';')] stdout: $(oneline "$R/doctor.out") stderr: $(oneline "$R/doctor.err")"
fi

# --- extra observations (never fail the run) ------------------------------------------------------
# paddock doctor in a cgroup shared with another process.
S=$CG/t-shared-doctor
mkdir "$S"
sleep 600 &
other=$!
echo "$other" >"$S/cgroup.procs"
start_in "$S" doctor-shared doctor
wait_p 180
kill "$other" 2>/dev/null
wait "$other" 2>/dev/null
info doctor-shared "paddock doctor in a shared cgroup: exit $RC; $(grep -E '^cgroup (memory|pids|cpu) ' "$R/doctor-shared.out" | tr -s ' ' | cut -c1-200 | tr '\n' ';')"

# SIGKILL of paddock exec while its command runs: what is left behind.
T=$CG/t-kill
ex kill
start_alone t-kill kill "${EX[@]}" --config "$cfg" -- 'sleep 60'
pk=$P
kfound=$(populated_exec_cgroup "$T" "$pk")
sleep 0.5
kill -KILL "$pk"
wait_p 30
sleep 1
kprocs=""
[[ -n $kfound && -d $kfound ]] && kprocs=$(tr '\n' ' ' <"$kfound/cgroup.procs")
# A later Paddock could only sweep them from inside /t-kill, and nothing can join it now.
join=$(bash -c 'echo $$ >"$0/cgroup.procs" && echo joined' "$T" 2>&1)
info sigkill-leftovers "after SIGKILL of paddock (pid $pk): cgroups left below /t-kill: [$(cgls "$T")], processes still in the exec cgroup: [${kprocs}]; a new process joining /t-kill (as a later Paddock would have to, to sweep them): ${join//$'\n'/ }"

# Paddock in the root cgroup together with every other process: the root is exempt from the
# "no internal processes" rule, so it could use its controllers directly.
P=""
ex root
bash -c 'exec "$@"' x "$PADDOCK" "${EX[@]}" --config "$cfg" -- 'cat /proc/self/cgroup' \
    >"$R/root.out" 2>"$R/root.err" </dev/null &
P=$!
wait_p 120
info root-cgroup "paddock started in the root cgroup /: exit $RC, the command's cgroup: $(oneline "$R/root.out"); stderr: $(oneline "$R/root.err")"

finish
