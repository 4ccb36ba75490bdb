//! The guest image: Debian's kernel (for QEMU) and one initramfs that boots
//! under both QEMU and User Mode Linux. Built from Debian packages on first
//! use, cached per machine, guarded by a lock file so parallel test
//! processes build it once.

use crate::{run_ok, workspace_root};
use nix::fcntl::{Flock, FlockArg};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Instant;

/// Kernel modules loaded by `/init` under QEMU (dependencies are added and
/// ordered from each module's `depends=` field). Under UML there are none:
/// the UML kernel has its own `vec` driver built in.
const MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_net",
    "tun",
    "sch_netem",
    "vmw_vsock_virtio_transport",
];

/// Host binaries copied into the image with the shared libraries `ldd`
/// lists: (path on the host, path in the image, Debian package).
const TOOLS: &[(&str, &str, &str)] = &[
    ("/usr/bin/iperf3", "usr/bin/iperf3", "iperf3"),
    // iproute2's ip and tc shadow busybox's (tc with netem for loss tests).
    ("/usr/sbin/ip", "usr/sbin/ip", "iproute2"),
    ("/usr/sbin/tc", "usr/sbin/tc", "iproute2"),
];

/// Bump when the build recipe changes in a way the texts below do not show.
const RECIPE_VERSION: u32 = 2;

/// The guest's `/init`. The kernel command line carries the test script as
/// `gvtest=<base64>` (or `gvtestgz=<base64 of gzip>`); `gvnic=1` says a NIC
/// is expected, so wait for it to appear.
const INIT: &str = r#"#!/bin/sh
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec </dev/null >/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
if [ "$(cat /lib/modules/kernel-release 2>/dev/null)" = "$(uname -r)" ]; then
  for m in $(cat /lib/modules/load-order); do
    insmod "/lib/modules/$m.ko" || echo "gvtest-init: insmod $m failed"
  done
fi
ip link set lo up
nic=0
for w in $(cat /proc/cmdline); do [ "$w" = gvnic=1 ] && nic=1; done
IFACE=
i=0
while :; do
  for d in /sys/class/net/*; do
    n=${d##*/}
    if [ "$n" != lo ] && [ -e "$d" ]; then IFACE=$n; break; fi
  done
  [ -n "$IFACE" ] || [ $nic = 0 ] || [ $i -ge 100 ] && break
  i=$((i+1))
  sleep 0.05
done
export IFACE
[ -n "$IFACE" ] && ip link set "$IFACE" up
for w in $(cat /proc/cmdline); do
  case "$w" in
    gvtest=*) echo "${w#gvtest=}" | base64 -d > /tmp/gvtest.sh ;;
    gvtestgz=*) echo "${w#gvtestgz=}" | base64 -d | gunzip > /tmp/gvtest.sh ;;
  esac
done
echo "GVTEST-BEGIN iface=$IFACE kernel=$(uname -r)"
if [ -f /tmp/gvtest.sh ]; then
  cd /tmp && sh /tmp/gvtest.sh
  rc=$?
else
  echo "gvtest-init: no gvtest= script on the kernel command line"
  rc=127
fi
echo "GVTEST-EXIT $rc"
sync
poweroff -f
sleep 5
reboot -f
"#;

/// busybox udhcpc's default script: configures the lease and prints it on
/// one line for the test to check.
const UDHCPC_SCRIPT: &str = r#"#!/bin/sh
case "$1" in
  deconfig)
    ip addr flush dev "$interface"
    ip link set "$interface" up
    ;;
  bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
    [ -n "$mtu" ] && ip link set "$interface" mtu "$mtu"
    for r in $router; do ip route replace default via "$r" dev "$interface"; break; done
    : > /etc/resolv.conf
    for d in $dns; do echo "nameserver $d" >> /etc/resolv.conf; done
    [ -n "$domain" ] && echo "search $domain" >> /etc/resolv.conf
    echo "udhcpc: $1 ip=$ip mask=$mask router=$router dns=$dns mtu=$mtu domain=$domain lease=$lease"
    ;;
esac
exit 0
"#;

/// A built guest image: paths to the kernel and the initramfs.
#[derive(Debug)]
pub struct GuestImage {
    /// Debian's kernel as an uncompressed ELF `vmlinux` (QEMU `-kernel`,
    /// booted through PVH).
    pub kernel: PathBuf,
    /// Uncompressed newc cpio (QEMU `-initrd`, UML `initrd=`).
    pub initrd: PathBuf,
    /// `uname -r` of `kernel`.
    pub kernel_release: String,
}

impl GuestImage {
    /// The cached image, built on first use. The cache lives in
    /// `$GVTEST_GUEST_DIR`, default `<workspace>/target/guest`.
    pub fn get() -> &'static GuestImage {
        static IMAGE: OnceLock<GuestImage> = OnceLock::new();
        IMAGE.get_or_init(|| {
            let dir = std::env::var_os("GVTEST_GUEST_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| workspace_root().join("target").join("guest"));
            GuestImage::build_in(&dir)
        })
    }

    /// Builds (or reuses) the image in `dir`.
    pub fn build_in(dir: &Path) -> GuestImage {
        fs::create_dir_all(dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        let lock_path = dir.join(".lock");
        let lock_file = File::create(&lock_path)
            .unwrap_or_else(|e| panic!("create {}: {e}", lock_path.display()));
        let _lock = Flock::lock(lock_file, FlockArg::LockExclusive)
            .unwrap_or_else(|(_, e)| panic!("flock {}: {e}", lock_path.display()));

        let stamp_path = dir.join("stamp");
        let want = recipe_stamp();
        let image = GuestImage {
            kernel: dir.join("vmlinux"),
            initrd: dir.join("initrd.cpio"),
            kernel_release: String::new(),
        };
        if let Ok(stamp) = fs::read_to_string(&stamp_path) {
            let mut lines = stamp.lines();
            if lines.next() == Some(want.as_str())
                && image.kernel.is_file()
                && image.initrd.is_file()
            {
                let release = lines.next().unwrap_or_default().to_string();
                return GuestImage {
                    kernel_release: release,
                    ..image
                };
            }
        }
        let _ = fs::remove_file(&stamp_path);
        let started = Instant::now();
        let release = build(dir, &image.kernel, &image.initrd);
        fs::write(&stamp_path, format!("{want}\n{release}\n")).expect("write stamp");
        eprintln!(
            "guest image built in {:.1} s: {} {}",
            started.elapsed().as_secs_f64(),
            image.kernel.display(),
            image.initrd.display()
        );
        GuestImage {
            kernel_release: release,
            ..image
        }
    }
}

fn recipe_stamp() -> String {
    // FNV-1a over everything that shapes the image.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |s: &str| {
        for b in s.bytes().chain([0u8]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    feed(INIT);
    feed(UDHCPC_SCRIPT);
    MODULES.iter().for_each(|m| feed(m));
    TOOLS.iter().for_each(|t| feed(t.1));
    format!("recipe v{RECIPE_VERSION} {h:016x}")
}

/// The kernel package `linux-image-amd64` depends on (`linux-image-6.1.0-NN-amd64`).
fn kernel_package() -> String {
    if let Ok(p) = std::env::var("GVTEST_KERNEL_PKG") {
        return p;
    }
    let out = run_ok(&["apt-cache", "depends", "linux-image-amd64"]);
    out.lines()
        .filter_map(|l| l.trim().strip_prefix("Depends:"))
        .map(str::trim)
        .find(|p| p.starts_with("linux-image-"))
        .map(str::to_string)
        .unwrap_or_else(|| {
            panic!(
                "apt-cache depends linux-image-amd64 names no kernel package \
                 (run `apt-get update` first):\n{out}"
            )
        })
}

fn build(dir: &Path, kernel_out: &Path, initrd_out: &Path) -> String {
    let staging = dir.join(format!("build-{}", std::process::id()));
    let _ = fs::remove_dir_all(&staging);
    fs::create_dir_all(&staging).expect("create staging dir");

    // 1. Kernel package, downloaded and unpacked (never installed).
    let pkg = kernel_package();
    let debs = staging.join("deb");
    fs::create_dir_all(&debs).expect("mkdir deb");
    let out = Command::new("apt-get")
        .args(["download", "-q", "-o", "APT::Sandbox::User=root", &pkg])
        .current_dir(&debs)
        .output()
        .expect("run apt-get download");
    assert!(
        out.status.success(),
        "apt-get download {pkg} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deb = fs::read_dir(&debs)
        .expect("read deb dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .unwrap_or_else(|| panic!("apt-get download {pkg} left no .deb"));
    let x = staging.join("x");
    run_ok(&["dpkg-deb", "-x", path_str(&deb), path_str(&x)]);
    let _ = fs::remove_file(&deb);

    let (vmlinuz, release) = fs::read_dir(x.join("boot"))
        .expect("read boot dir of the kernel package")
        .filter_map(Result::ok)
        .find_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_prefix("vmlinuz-")
                .map(|rel| (e.path(), rel.to_string()))
        })
        .unwrap_or_else(|| panic!("{pkg} has no /boot/vmlinuz-*"));

    // 2. The initramfs tree.
    let root = staging.join("root");
    for d in [
        "bin",
        "sbin",
        "usr/bin",
        "usr/sbin",
        "lib/modules",
        "etc",
        "proc",
        "sys",
        "dev",
        "tmp",
        "run",
        "root",
        "usr/share/udhcpc",
    ] {
        fs::create_dir_all(root.join(d)).expect("mkdir in image");
    }
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("busybox not found: apt-get install busybox-static"));
    copy_with_libs(busybox, &root, "bin/busybox");
    for applet in run_ok(&[path_str(busybox), "--list-full"]).lines() {
        let applet = applet.trim().trim_start_matches('/');
        if applet.is_empty() || applet == "bin/busybox" {
            continue;
        }
        let link = root.join(applet);
        if let Some(parent) = link.parent() {
            fs::create_dir_all(parent).expect("mkdir applet dir");
        }
        if fs::symlink_metadata(&link).is_err() {
            symlink("/bin/busybox", &link).expect("applet symlink");
        }
    }
    for (host, guest, package) in TOOLS {
        let host = Path::new(host);
        assert!(
            host.is_file(),
            "{} not found: apt-get install {package}",
            host.display()
        );
        let _ = fs::remove_file(root.join(guest));
        copy_with_libs(host, &root, guest);
    }

    // 3. Modules, in dependency order.
    let mod_root = x.join("lib/modules").join(&release);
    let mut index = BTreeMap::new();
    index_modules(&mod_root, &mut index);
    let mut order = Vec::new();
    let mut seen = BTreeSet::new();
    for m in MODULES {
        add_module(m, &index, &mut seen, &mut order);
    }
    for name in &order {
        let src = &index[name];
        let dst = root.join("lib/modules").join(format!("{name}.ko"));
        let src_s = path_str(src);
        let bytes = if src_s.ends_with(".ko") {
            fs::read(src).expect("read module")
        } else {
            let tool = if src_s.ends_with(".xz") {
                "xz"
            } else if src_s.ends_with(".zst") {
                "zstd"
            } else {
                "gzip"
            };
            let out = Command::new(tool)
                .args(["-dc", src_s])
                .output()
                .unwrap_or_else(|e| panic!("run {tool} to decompress {src_s}: {e}"));
            assert!(out.status.success(), "{tool} -dc {src_s} failed");
            out.stdout
        };
        fs::write(&dst, bytes).expect("write module");
    }
    fs::write(root.join("lib/modules/load-order"), order.join("\n") + "\n")
        .expect("write load-order");
    fs::write(
        root.join("lib/modules/kernel-release"),
        format!("{release}\n"),
    )
    .expect("write kernel-release");

    // 4. /init and a few files of /etc.
    write_exec(&root.join("init"), INIT);
    write_exec(&root.join("usr/share/udhcpc/default.script"), UDHCPC_SCRIPT);
    for (path, text) in [
        ("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"),
        ("etc/group", "root:x:0:\n"),
        ("etc/hosts", "127.0.0.1 localhost\n::1 localhost\n"),
        ("etc/hostname", "gvtest\n"),
        ("etc/resolv.conf", ""),
    ] {
        fs::write(root.join(path), text).expect("write /etc file");
    }

    // 5. Pack, then move into place.
    let initrd_tmp = staging.join("initrd.cpio");
    // Uncompressed: the kernel unpacks it faster than a gzip'd one (about
    // 0.2 s less per QEMU boot), and QEMU and UML both take it.
    let pack = format!(
        "cd '{}' && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet > '{}'",
        path_str(&root),
        path_str(&initrd_tmp)
    );
    run_ok(&["bash", "-c", &format!("set -euo pipefail; {pack}")]);
    // QEMU boots an uncompressed ELF vmlinux through PVH, skipping the
    // bzImage's real-mode setup and XZ decompression: measured 5.6 s -> 2.4 s
    // per boot under TCG.
    let vmlinux = extract_vmlinux(&vmlinuz).unwrap_or_else(|| {
        panic!(
            "cannot extract an ELF vmlinux from {} (no xz/zstd/gzip payload)",
            vmlinuz.display()
        )
    });
    fs::write(staging.join("vmlinux"), vmlinux).expect("write vmlinux");
    fs::rename(staging.join("vmlinux"), kernel_out).expect("move vmlinux into place");
    fs::rename(&initrd_tmp, initrd_out).expect("move initrd into place");
    let _ = fs::remove_dir_all(&staging);
    release
}

/// The ELF image inside a bzImage: the first compressed payload (xz, zstd or
/// gzip magic) that decompresses to an ELF file.
fn extract_vmlinux(bzimage: &Path) -> Option<Vec<u8>> {
    let bytes = fs::read(bzimage).ok()?;
    let formats: [(&[u8], &str, &[&str]); 3] = [
        (b"\xfd7zXZ\0", "xz", &["-dc", "--single-stream"]),
        (b"\x28\xb5\x2f\xfd", "zstd", &["-dc"]),
        (b"\x1f\x8b\x08", "gzip", &["-dc"]),
    ];
    for (magic, tool, args) in formats {
        let offsets = bytes
            .windows(magic.len())
            .enumerate()
            .filter(|(_, w)| *w == magic)
            .map(|(i, _)| i);
        for off in offsets.take(4) {
            let out = pipe_through(tool, args, &bytes[off..]);
            if out.starts_with(b"\x7fELF") {
                return Some(out);
            }
        }
    }
    None
}

/// Output of `tool args` fed `input` (trailing garbage errors are ignored:
/// the caller checks what came out).
fn pipe_through(tool: &str, args: &[&str], input: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let Ok(mut child) = Command::new(tool)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
    else {
        return Vec::new();
    };
    let Some(mut stdin) = child.stdin.take() else {
        return Vec::new();
    };
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child
        .wait_with_output()
        .map(|o| o.stdout)
        .unwrap_or_default();
    let _ = writer.join();
    out
}

fn path_str(p: &Path) -> &str {
    p.to_str()
        .unwrap_or_else(|| panic!("non-UTF-8 path {}", p.display()))
}

fn write_exec(path: &Path, text: &str) {
    fs::write(path, text).expect("write script");
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).expect("chmod script");
}

/// Copies `host` to `root/guest` and every shared library `ldd` names to the
/// same path under `root` (a static binary has none).
fn copy_with_libs(host: &Path, root: &Path, guest: &str) {
    let dst = root.join(guest);
    fs::copy(host, &dst).unwrap_or_else(|e| panic!("copy {}: {e}", host.display()));
    let out = Command::new("ldd").arg(host).output().expect("run ldd");
    if !out.status.success() {
        return; // "not a dynamic executable"
    }
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let lib = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        let Some(lib) = lib.filter(|l| l.starts_with('/')) else {
            continue;
        };
        let dst = root.join(lib.trim_start_matches('/'));
        if dst.exists() {
            continue;
        }
        fs::create_dir_all(dst.parent().expect("lib has a parent")).expect("mkdir lib dir");
        fs::copy(lib, &dst).unwrap_or_else(|e| panic!("copy {lib}: {e}"));
    }
}

fn module_name(file: &str) -> Option<String> {
    [".ko", ".ko.xz", ".ko.zst", ".ko.gz"]
        .iter()
        .find_map(|ext| file.strip_suffix(ext))
        .map(|stem| stem.replace('-', "_"))
}

fn index_modules(dir: &Path, index: &mut BTreeMap<String, PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.filter_map(Result::ok) {
        let path = e.path();
        if path.is_dir() {
            index_modules(&path, index);
        } else if let Some(name) = module_name(&e.file_name().to_string_lossy()) {
            index.insert(name, path);
        }
    }
}

/// Dependencies from the module's `.modinfo` section (`depends=a,b`).
fn module_depends(path: &Path) -> Vec<String> {
    let s = path_str(path);
    let bytes = if s.ends_with(".ko") {
        fs::read(path).expect("read module")
    } else {
        let tool = if s.ends_with(".xz") {
            "xz"
        } else if s.ends_with(".zst") {
            "zstd"
        } else {
            "gzip"
        };
        Command::new(tool)
            .args(["-dc", s])
            .output()
            .expect("decompress module")
            .stdout
    };
    let key = b"\0depends=";
    let Some(pos) = bytes.windows(key.len()).position(|w| w == key) else {
        return Vec::new();
    };
    let rest = &bytes[pos + key.len()..];
    let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
    String::from_utf8_lossy(&rest[..end])
        .split(',')
        .filter(|d| !d.is_empty())
        .map(|d| d.replace('-', "_"))
        .collect()
}

fn add_module(
    name: &str,
    index: &BTreeMap<String, PathBuf>,
    seen: &mut BTreeSet<String>,
    order: &mut Vec<String>,
) {
    if !seen.insert(name.to_string()) {
        return;
    }
    let path = index
        .get(name)
        .unwrap_or_else(|| panic!("kernel module {name} not found in the kernel package"));
    for dep in module_depends(path) {
        add_module(&dep, index, seen, order);
    }
    order.push(name.to_string());
}
