//! The empty XDP program (`r0 = XDP_PASS; exit`) the per-packet figures subtract: it is timed
//! through BPF_PROG_TEST_RUN exactly like the gateway program (one call per packet, same
//! packet), so what remains is the program's own work, not the syscall and test-run machinery.
//!
//! It is the same two instructions as `gateway_xdp_baseline` in the object; the dataplane does
//! not expose that program, so it is loaded here with the bpf(2) syscall directly.

use std::{
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::Duration,
};

use anyhow::bail;

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_PROG_TYPE_XDP: u32 = 6;

#[repr(C)]
#[derive(Default)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
    _rest: [u64; 16],
}

#[repr(C)]
#[derive(Default)]
struct TestRun {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

pub struct Baseline {
    fd: OwnedFd,
    out: Vec<u8>,
}

impl Baseline {
    pub fn load() -> anyhow::Result<Self> {
        // mov64 r0, 2 (XDP_PASS); exit
        let insns: [u8; 16] = [0xb7, 0, 0, 0, 2, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0];
        let license = b"GPL\0";
        let mut name = [0u8; 16];
        name[..11].copy_from_slice(b"gw_baseline");
        let attr = ProgLoad {
            prog_type: BPF_PROG_TYPE_XDP,
            insn_cnt: 2,
            insns: insns.as_ptr() as u64,
            license: license.as_ptr() as u64,
            prog_name: name,
            ..Default::default()
        };
        // Safety: bpf(2) with a zero-padded attr whose pointers outlive the call.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_PROG_LOAD,
                &attr as *const ProgLoad,
                std::mem::size_of::<ProgLoad>(),
            )
        };
        if fd < 0 {
            bail!(
                "loading the baseline XDP program: {}",
                std::io::Error::last_os_error()
            );
        }
        // Safety: a new fd the kernel just returned, owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        Ok(Baseline {
            fd,
            out: vec![0; 4096],
        })
    }

    /// One BPF_PROG_TEST_RUN call on `packet` (repeat = 1): (action, kernel-measured duration).
    pub fn run(&mut self, packet: &[u8]) -> anyhow::Result<(u32, Duration)> {
        self.run_repeat(packet, 1)
    }

    /// One BPF_PROG_TEST_RUN call of `repeat` runs on `packet`: (action, the kernel's mean
    /// duration per run, total / repeat in whole ns).
    pub fn run_repeat(&mut self, packet: &[u8], repeat: u32) -> anyhow::Result<(u32, Duration)> {
        let mut attr = TestRun {
            prog_fd: self.fd.as_raw_fd() as u32,
            data_size_in: packet.len() as u32,
            data_size_out: self.out.len() as u32,
            data_in: packet.as_ptr() as u64,
            data_out: self.out.as_mut_ptr() as u64,
            repeat,
            ..Default::default()
        };
        // Safety: bpf(2) with buffers that outlive the call and sizes that match them.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_PROG_TEST_RUN,
                &mut attr as *mut TestRun,
                std::mem::size_of::<TestRun>(),
            )
        };
        if rc != 0 {
            bail!(
                "BPF_PROG_TEST_RUN (baseline): {}",
                std::io::Error::last_os_error()
            );
        }
        Ok((attr.retval, Duration::from_nanos(attr.duration as u64)))
    }
}
