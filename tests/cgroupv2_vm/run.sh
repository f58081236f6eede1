#!/usr/bin/env bash
# Boots a Debian 12 kernel under qemu (TCG, no KVM) whose only cgroup hierarchy is cgroup2
# with memory, pids and cpu, and runs the real `paddock` binary there (tests/cgroupv2_vm/guest.sh).
#
#   bash tests/cgroupv2_vm/run.sh /path/to/paddock
#
# The guest sees the host's root filesystem read-only over virtio-9p (so it has the host's /usr,
# /etc and the binary) and writes its results to a second, writable 9p share. Exits 0 only if
# every check passed. See README.md beside this file.
#
# Environment:
#   CGV2_CACHE       download/extract cache (default /tmp/paddock-cgroupv2-vm-cache)
#   CGV2_KERNEL_PKG  kernel package to boot (default: what linux-image-amd64 depends on, 6.1.x)
#   CGV2_TIMEOUT     hard timeout of qemu in seconds (default 420)
#   CGV2_KEEP        1: keep the work dir (console log, guest logs) for debugging
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
log() { printf 'cgroupv2_vm: %s\n' "$*"; }
die() { printf 'cgroupv2_vm: FAIL: %s\n' "$*" >&2; exit 1; }

[[ $# -eq 1 ]] || die "usage: bash tests/cgroupv2_vm/run.sh /path/to/paddock"
[[ -x $1 && -f $1 ]] || die "not an executable file: $1"
paddock=$(realpath "$1")

cache=${CGV2_CACHE:-/tmp/paddock-cgroupv2-vm-cache}
qemu_timeout=${CGV2_TIMEOUT:-420}
start=$(date +%s)
mkdir -p "$cache"

# --- host tools --------------------------------------------------------------------------
apt_updated=0
apt_update() {
    if [[ $apt_updated == 0 ]]; then
        log "apt-get update"
        apt-get update -qq >/dev/null || die "apt-get update failed"
        apt_updated=1
    fi
}
need_root() { [[ $(id -u) == 0 ]] || die "$1 is missing and installing it needs root"; }
installed=()
apt_install() { # PACKAGE...
    need_root "$*"
    apt_update
    log "apt-get install $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >"$cache/apt.log" 2>&1 ||
        { cat "$cache/apt.log"; die "apt-get install $* failed"; }
    installed+=("$@")
}
command -v qemu-system-x86_64 >/dev/null || apt_install qemu-system-x86
# The guest runs the host's own userland; these are what guest.sh and its commands use.
[[ -x /usr/bin/python3 ]] || apt_install python3
command -v ip >/dev/null || apt_install iproute2

# --- kernel and busybox, cached ----------------------------------------------------------
kdir=$cache/kernel
bb=$cache/busybox
# The modules the guest loads (with their dependencies): virtio PCI transport, 9p over virtio,
# an RNG (so nothing waits for entropy under TCG) and overlayfs (`paddock doctor` probes it).
want_modules=(virtio_pci 9pnet_virtio 9p virtio-rng overlay)

fetch_debs() { # PACKAGE... -> downloads into $cache/debs
    need_root "the kernel/busybox cache"
    apt_update
    mkdir -p "$cache/debs"
    (cd "$cache/debs" && apt-get download -q -o APT::Sandbox::User=root "$@" >/dev/null)
}

if [[ ! -f $kdir/ready || ( -n ${CGV2_KERNEL_PKG:-} && $(cat "$kdir/package") != "$CGV2_KERNEL_PKG" ) ]]; then
    pkg=${CGV2_KERNEL_PKG:-}
    if [[ -z $pkg ]]; then
        apt_update
        pkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
            sed -n 's/^ *Depends: \(linux-image-6\.1[^ ]*-amd64\)$/\1/p' | head -1)
        [[ -n $pkg ]] || pkg=$(apt-cache search --names-only '^linux-image-6\.1\.0-[0-9]+-amd64$' |
            awk '{print $1}' | sort -V | tail -1)
        [[ -n $pkg ]] || die "no linux-image-6.1*-amd64 package found by apt"
    fi
    log "downloading $pkg (apt-get download; nothing is installed)"
    rm -f "$cache"/debs/linux-image-*.deb
    fetch_debs "$pkg"
    deb=$(ls "$cache"/debs/"$pkg"_*.deb)
    x=$(mktemp -d "$cache/extract.XXXXXX")
    dpkg-deb -x "$deb" "$x"
    mods=$x/lib/modules
    [[ -d $mods ]] || mods=$x/usr/lib/modules
    kver=$(ls "$mods")
    rm -rf "$kdir.new" && mkdir -p "$kdir.new/modules"
    cp "$x/boot/vmlinuz-$kver" "$kdir.new/vmlinuz"
    # Resolve the wanted modules and their dependencies into a load order, decompressing
    # .ko.xz / .ko.zst / .ko.gz so busybox insmod can load them.
    declare -A done_mod=()
    order=()
    find_mod() { # NAME -> path (module names treat - and _ alike)
        local a=${1//-/_} b=${1//_/-} f
        f=$(find "$mods/$kver/kernel" \( -name "$a.ko" -o -name "$a.ko.*" -o -name "$b.ko" -o -name "$b.ko.*" \) | head -1)
        [[ -n $f ]] || die "kernel module $1 not found in $pkg"
        printf '%s\n' "$f"
    }
    add_mod() {
        local name=${1//-/_} f out deps d
        [[ -n ${done_mod[$name]:-} ]] && return 0
        done_mod[$name]=1
        f=$(find_mod "$1")
        out=$kdir.new/modules/$name.ko
        case $f in
        *.ko) cp "$f" "$out" ;;
        *.ko.xz)
            command -v xz >/dev/null || apt_install xz-utils
            xz -dc "$f" >"$out"
            ;;
        *.ko.zst)
            command -v zstd >/dev/null || apt_install zstd
            zstd -qdc "$f" >"$out"
            ;;
        *.ko.gz) gzip -dc "$f" >"$out" ;;
        *) die "unknown module format: $f" ;;
        esac
        deps=$(tr '\0' '\n' <"$out" | sed -n 's/^depends=//p' | head -1)
        for d in ${deps//,/ }; do add_mod "$d"; done
        order+=("$name.ko")
    }
    for m in "${want_modules[@]}"; do add_mod "$m"; done
    printf '%s\n' "${order[@]}" >"$kdir.new/modules.list"
    printf '%s\n' "$pkg" >"$kdir.new/package"
    printf '%s\n' "$kver" >"$kdir.new/version"
    dpkg-deb -f "$deb" Version >"$kdir.new/pkgversion"
    touch "$kdir.new/ready"
    rm -rf "$x" "$kdir" "$cache/debs"/linux-image-*.deb
    mv "$kdir.new" "$kdir"
fi
if [[ ! -x $bb ]]; then
    log "downloading busybox-static (apt-get download; nothing is installed)"
    rm -f "$cache"/debs/busybox-static_*.deb
    fetch_debs busybox-static
    x=$(mktemp -d "$cache/extract.XXXXXX")
    dpkg-deb -x "$cache"/debs/busybox-static_*.deb "$x"
    cp "$x/bin/busybox" "$bb.new" && mv "$bb.new" "$bb"
    rm -rf "$x" "$cache"/debs/busybox-static_*.deb
fi
log "kernel $(cat "$kdir/package") $(cat "$kdir/pkgversion"), modules: $(tr '\n' ' ' <"$kdir/modules.list")"

# --- work dir, cleanup ---------------------------------------------------------------------
work=$(mktemp -d /tmp/paddock-cgv2.XXXXXX)
qemu_pid=""
tail_pid=""
cleanup() {
    local rc=$?
    set +e
    # $qemu_pid is `timeout`, which passes a TERM on to qemu; whatever is left then is killed,
    # qemu itself by the pid it wrote (checked to still be qemu).
    if [[ -n $qemu_pid ]] && kill -0 "$qemu_pid" 2>/dev/null; then
        kill -TERM "$qemu_pid" 2>/dev/null
        for _ in $(seq 50); do
            kill -0 "$qemu_pid" 2>/dev/null || break
            sleep 0.1
        done
    fi
    local qp
    qp=$(cat "$work/qemu.pid" 2>/dev/null)
    if [[ -n $qp ]] && [[ $(cat "/proc/$qp/comm" 2>/dev/null) == qemu-system-* ]]; then
        kill -KILL "$qp" 2>/dev/null
    fi
    for p in "$qemu_pid" "$tail_pid"; do
        [[ -n $p ]] && kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null
    done
    [[ -n $qemu_pid ]] && wait "$qemu_pid" 2>/dev/null
    if [[ ${CGV2_KEEP:-0} == 1 ]]; then
        log "work dir kept: $work"
    else
        rm -rf "$work"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

# --- initramfs -----------------------------------------------------------------------------
ird=$work/initramfs
mkdir -p "$ird"/{bin,dev,proc,sys,newroot,lib/modules}
cp "$bb" "$ird/bin/busybox"
cp "$kdir"/modules/*.ko "$kdir/modules.list" "$ird/lib/modules/"
cat >"$ird/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t devtmpfs dev /dev
exec </dev/console >/dev/console 2>&1
fatal() { echo "cgv2: FATAL (initramfs): $*"; poweroff -f; sleep 5; echo o >/proc/sysrq-trigger; }
mount -t proc proc /proc || fatal "mount proc"
mount -t sysfs sys /sys || fatal "mount sysfs"
for m in $(cat /lib/modules/modules.list); do
    insmod "/lib/modules/$m" || fatal "insmod $m"
done
opts=trans=virtio,version=9p2000.L,msize=262144
mount -t 9p -o "$opts,ro,cache=loose" hostroot /newroot || fatal "mount the host root over 9p"
mount -t tmpfs -o mode=1777 tmp /newroot/tmp || fatal "tmpfs /tmp"
mount -t tmpfs -o mode=755 run /newroot/run || fatal "tmpfs /run"
mkdir /newroot/run/cgv2
mount -t 9p -o "$opts" results /newroot/run/cgv2 || fatal "mount the results share"
mount --move /proc /newroot/proc && mount --move /sys /newroot/sys && mount --move /dev /newroot/dev ||
    fatal "move proc/sys/dev"
echo "cgv2: initramfs done, switching to the host root (read-only 9p)"
exec switch_root /newroot /bin/bash /run/cgv2/guest.sh
EOF
chmod 755 "$ird/init"
(cd "$ird" && find . | "$bb" cpio -o -H newc 2>/dev/null | gzip -1 >"$work/initramfs.gz")

# --- share: guest script, binary, parameters -----------------------------------------------
share=$work/share
mkdir -p "$share"
cp "${CGV2_GUEST_SCRIPT:-$here/guest.sh}" "$share/guest.sh"
# The guest mounts its own /tmp, /run, /proc, /sys and /dev over the host's, so a binary below
# those is copied into the share; anywhere else the guest runs the host's file itself.
case $paddock in
/tmp/* | /run/* | /proc/* | /sys/* | /dev/*)
    cp "$paddock" "$share/paddock"
    # `paddock` hands every subcommand but `exec` to `paddock-full` beside it.
    if [[ -x $(dirname "$paddock")/paddock-full ]]; then
        cp "$(dirname "$paddock")/paddock-full" "$share/paddock-full"
    fi
    guest_paddock=/run/cgv2/paddock
    ;;
*) guest_paddock=$paddock ;;
esac
# The Rust test that SIGKILLs paddock serve at many points (crates/cli/tests/no_orphans.rs),
# built by `cargo test` beside the binary: run in the guest too, so it holds on cgroup v2.
orphans_test=$(ls -t "$(dirname "$paddock")"/deps/no_orphans-* 2>/dev/null | grep -v '\.d$' | head -1 || true)
printf 'PADDOCK=%q\nCGV2_DEBUG=%q\nNO_ORPHANS_TEST=%q\n' "$guest_paddock" "${CGV2_DEBUG:-0}" "$orphans_test" >"$share/env"

# --- boot ------------------------------------------------------------------------------------
log "booting $(cat "$kdir/version") under qemu (TCG, 2 vCPUs, 2 GiB), timeout ${qemu_timeout}s; paddock: $paddock"
boot_start=$(date +%s)
mkdir -p "$cache"
: >"$work/console.log"
timeout -k 5 "$qemu_timeout" qemu-system-x86_64 \
    -machine pc -accel tcg,thread=multi -cpu max -smp 2 -m 2048 \
    -nographic -no-reboot -nic none -pidfile "$work/qemu.pid" \
    -kernel "$kdir/vmlinuz" -initrd "$work/initramfs.gz" \
    -append "console=ttyS0 panic=-1 oops=panic loglevel=${CGV2_LOGLEVEL:-3} mitigations=off random.trust_cpu=on cgroup_no_v1=all systemd.unified_cgroup_hierarchy=1" \
    -virtfs local,path=/,mount_tag=hostroot,security_model=passthrough,readonly=on,multidevs=remap,id=hostroot \
    -virtfs "local,path=$share,mount_tag=results,security_model=none,id=results" \
    -device virtio-rng-pci \
    </dev/null >"$work/console.log" 2>&1 &
qemu_pid=$!
# Show the guest's progress lines as they come.
tail -n +1 -f --pid="$qemu_pid" "$work/console.log" 2>/dev/null |
    grep --line-buffered -E '^cgv2: |^(PASS|FAIL|INFO) ' |
    sed -u -e 's/^\(.\{160\}\).*/\1 .../' -e 's/^/  guest| /' &
tail_pid=$!
qemu_rc=0
wait "$qemu_pid" || qemu_rc=$?
qemu_pid=""
sleep 0.3
kill "$tail_pid" 2>/dev/null || true
wait "$tail_pid" 2>/dev/null || true
tail_pid=""
end=$(date +%s)

# --- verdict ---------------------------------------------------------------------------------
results=$share/results.txt
expected=(pure-cgroup2 memory-oom pids-limit exec-cgroup-live exec-cgroup-removed no-rlimit-fallback
    cpu-throttled sigterm-cleanup timeout-cleanup shared-cgroup-fallback serve-subtree serve-kill-no-orphans
    no-orphans-v2 cgroup-reusable doctor-v2)
fail=0
echo
echo "=== cgroup v2 VM results (guest kernel $(cat "$kdir/version"), qemu exit $qemu_rc) ==="
if [[ $qemu_rc == 124 || $qemu_rc == 137 ]]; then
    echo "qemu was killed by the ${qemu_timeout}s timeout"
    fail=1
fi
if [[ ! -s $results ]]; then
    echo "no results file from the guest; last console lines:"
    tail -n 40 "$work/console.log" | sed 's/^/  console| /'
    fail=1
else
    cat "$results"
    grep -q '^DONE$' "$results" || { echo "the guest did not finish (no DONE line)"; fail=1; }
    grep -q '^FAIL ' "$results" && fail=1
    for c in "${expected[@]}"; do
        grep -q "^PASS $c:" "$results" || { echo "missing a PASS for check $c"; fail=1; }
    done
fi
npass=$(grep -c '^PASS ' "$results" 2>/dev/null || true)
nfail=$(grep -c '^FAIL ' "$results" 2>/dev/null || true)
if [[ $fail != 0 ]]; then
    for f in "$share"/*.out "$share"/*.err; do
        [[ -s $f ]] || continue
        echo "--- $(basename "$f")"
        head -c 4000 "$f"
    done
    if [[ -s $share/dmesg.txt ]]; then
        echo "--- last kernel messages of the guest"
        tail -n 40 "$share/dmesg.txt"
    fi
    if [[ ${CGV2_KEEP:-0} != 1 ]]; then
        echo "(rerun with CGV2_KEEP=1 to keep $work: console.log, share/*.out|err, share/dmesg.txt)"
    fi
fi
echo "time: $((end - start))s total, $((end - boot_start))s in qemu${installed[*]:+; installed: ${installed[*]}}"
# A harness-level failure (timeout, no DONE, a missing check) counts as one failure.
[[ $fail != 0 && ${nfail:-0} == 0 ]] && nfail=1
echo "cgroupv2_vm: ${npass:-0} passed, ${nfail:-0} failed"
[[ $fail == 0 ]]
