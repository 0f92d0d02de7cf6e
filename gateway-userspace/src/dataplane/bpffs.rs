//! Where pins persist. Pins live as long as the bpffs instance holding them; an instance lives
//! as long as a mount of it. `ip netns exec` gives the agent a private mount namespace with a
//! fresh /sys and no bpffs: a bpffs the agent mounted there dies with the process, and with it
//! every pinned map and link (the XDP program detaches, established flows break). So pins go to
//! the host's bpffs, reached through the root of a process in the host's mount namespace
//! (`/proc/1/root`, or the launching shell's), or the agent refuses to start.

use std::path::{Path, PathBuf};

use super::DataplaneError;

const BPFFS: &str = "/sys/fs/bpf";
const BPF_FS_MAGIC: u64 = 0xcafe_4a11;

/// Where the pins of `root` really go, and whether a bpffs must first be mounted at /sys/fs/bpf.
#[derive(Debug, PartialEq, Eq)]
pub enum Location {
    /// `root` as given (a bpffs is mounted there, or it is not under /sys/fs/bpf at all).
    AsIs(PathBuf),
    /// The same path in the host's mount namespace, through a descriptor of its bpffs.
    Host(PathBuf),
    /// No bpffs at /sys/fs/bpf, in the host's mount namespace: mounting one persists.
    MountHere(PathBuf),
}

impl Location {
    pub fn path(&self) -> &Path {
        match self {
            Location::AsIs(p) | Location::Host(p) | Location::MountHere(p) => p,
        }
    }
}

/// Finds where `root` persists, or says why nothing would.
pub fn locate(root: &Path) -> Result<Location, DataplaneError> {
    if !root.starts_with(BPFFS) || is_bpffs(Path::new(BPFFS)) {
        return Ok(Location::AsIs(root.to_path_buf()));
    }
    let rel = root.strip_prefix(BPFFS).unwrap_or(root);
    // The host's mount namespace: PID 1's, else that of the process that started us (the
    // shell that ran `ip netns exec`) or its ancestors; PID 1 is not always inspectable.
    let own = mount_ns(std::process::id());
    let mut private = false;
    for pid in std::iter::once(1).chain(ancestors()) {
        let Some(ns) = mount_ns(pid) else { continue };
        if Some(&ns) == own.as_ref() {
            continue;
        }
        private = true;
        let dir = Path::new("/proc")
            .join(pid.to_string())
            .join("root")
            .join(BPFFS.trim_start_matches('/'));
        if is_bpffs(&dir) {
            return Ok(Location::Host(host_dir(&dir)?.join(rel)));
        }
    }
    if !private {
        return Ok(Location::MountHere(root.to_path_buf()));
    }
    Err(DataplaneError::NoBpffs {
        root: root.to_path_buf(),
        why: "this process runs in a private mount namespace (`ip netns exec` makes one) \
              without a bpffs at /sys/fs/bpf, and none was found in the host's"
            .into(),
    })
}

/// The parent, grandparent, ... of this process (not PID 1 or 0).
fn ancestors() -> impl Iterator<Item = u32> {
    let mut pid = std::process::id();
    std::iter::from_fn(move || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name (field 2) may hold spaces: fields after its closing ')'.
        let ppid: u32 = stat
            .rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        (ppid > 1).then(|| {
            pid = ppid;
            ppid
        })
    })
    .take(64)
}

fn mount_ns(pid: u32) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/ns/mnt")).ok()
}

/// Holds the host's /sys/fs/bpf open for the agent's lifetime and returns a path through that
/// descriptor: it stays valid when the process it was found through exits.
fn host_dir(dir: &Path) -> Result<PathBuf, DataplaneError> {
    static HOST: std::sync::OnceLock<std::fs::File> = std::sync::OnceLock::new();
    let file = match HOST.get() {
        Some(f) => f,
        None => {
            let f = std::fs::File::open(dir).map_err(|source| DataplaneError::Bpffs {
                path: dir.to_path_buf(),
                source,
            })?;
            HOST.get_or_init(|| f)
        }
    };
    use std::os::fd::AsRawFd as _;
    Ok(PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd())))
}

/// Prepares `root` for pinning (mounting bpffs where that persists) and returns the path to
/// pin under.
pub fn prepare(root: &Path) -> Result<PathBuf, DataplaneError> {
    let loc = locate(root)?;
    match &loc {
        Location::MountHere(_) => mount_bpffs()?,
        Location::Host(p) => log::info!(
            "/sys/fs/bpf is not a bpffs in this mount namespace (`ip netns exec`?): pinning in \
             the host's, at {}, so flows outlive this process",
            p.display()
        ),
        Location::AsIs(_) => {}
    }
    let path = loc.path().to_path_buf();
    std::fs::create_dir_all(&path).map_err(|source| DataplaneError::Bpffs {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

fn mount_bpffs() -> Result<(), DataplaneError> {
    std::fs::create_dir_all(BPFFS).ok();
    let src = std::ffi::CString::new("bpf").expect("no NUL");
    let dst = std::ffi::CString::new(BPFFS).expect("no NUL");
    // SAFETY: plain mount(2) call with valid C strings.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            dst.as_ptr(),
            src.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(DataplaneError::Bpffs {
            path: BPFFS.into(),
            source: std::io::Error::last_os_error(),
        });
    }
    log::info!("mounted bpffs at {BPFFS}");
    Ok(())
}

pub fn is_bpffs(p: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(p.as_os_str().to_string_lossy().as_bytes()) else {
        return false;
    };
    // SAFETY: statfs is plain old data; all-zero is a valid value to be overwritten.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is a NUL-terminated path that outlives the call; st is a valid out pointer.
    unsafe { libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as u64 == BPF_FS_MAGIC }
}

#[cfg(test)]
mod tests {
    use super::{locate, Location, Path};

    #[test]
    fn a_root_outside_sys_fs_bpf_is_used_as_is() {
        let l = locate(Path::new("/run/gateway-pins")).unwrap();
        assert_eq!(l, Location::AsIs("/run/gateway-pins".into()));
    }
}
