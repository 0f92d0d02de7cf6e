//! Maglev rings written through a shared mapping of `MAGLEV` (a `BPF_F_MMAPABLE` array)
//! instead of map-update syscalls: the kernel's batch update of an array still copies element
//! by element behind one syscall (about 1.5 ms per 4,099-slot ring, over a second for 1,000
//! services), while stores into the mapping are plain memory writes.
//!
//! The mapping covers only the pages of the rings one apply writes and is dropped when that
//! apply ends, so the agent's resident set does not count the whole map (64 MiB) between
//! applies. Ordering: every ring is written into a slot no service points at yet
//! ([`diff`](super::diff)'s make-before-break), and [`publish`] is called before the `SERVICES`
//! update that switches a service to it, so the program never sees a half-written ring.

use std::{
    io,
    os::fd::{AsRawFd as _, BorrowedFd},
    ptr::NonNull,
    sync::atomic::{fence, AtomicU32, Ordering},
};

/// The kernel lays an array map's values out at a stride of their size rounded up to 8 bytes
/// (`array_map_alloc`), starting at offset 0 of the mapping; a `u32` value takes 8.
pub const fn stride(value_size: u32) -> usize {
    (value_size as usize).div_ceil(8) * 8
}

/// A writable mapping of the elements `first..end` of an array map of `u32` values (its pages,
/// rounded out to page boundaries).
pub struct RingMap {
    /// Start of the mapping (a page boundary at or before element `first`).
    base: NonNull<u8>,
    len: usize,
    /// Byte offset in the map of `base`.
    offset: usize,
    stride: usize,
    first: u32,
    end: u32,
}

// SAFETY: the mapping is owned by this value alone (unmapped on drop) and only written through
// `&mut self`; nothing ties it to the thread that created it.
unsafe impl Send for RingMap {}

impl RingMap {
    /// Maps elements `first..end` of the array map `fd`, whose values are `value_size` bytes
    /// and which has `max_entries` of them. Fails (EINVAL from the kernel) if the map was not
    /// created with `BPF_F_MMAPABLE`, e.g. a pin left by an older agent.
    pub fn map(
        fd: BorrowedFd<'_>,
        value_size: u32,
        max_entries: u32,
        first: u32,
        end: u32,
    ) -> io::Result<Self> {
        if value_size != 4 || first >= end || end > max_entries {
            return Err(io::Error::other(format!(
                "ring mapping of elements {first}..{end} of {max_entries} ({value_size}-byte values)"
            )));
        }
        let stride = stride(value_size);
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        let page = usize::try_from(page).map_err(|_| io::Error::last_os_error())?;
        let start = first as usize * stride / page * page;
        let stop = (end as usize * stride).div_ceil(page) * page;
        let map_len = (max_entries as usize * stride).div_ceil(page) * page;
        let stop = stop.min(map_len);
        // SAFETY: a fresh shared mapping chosen by the kernel (no fixed address, so nothing of
        // this process is replaced); the kernel checks the range against the map's size and
        // refuses a map that is not mmapable. The result is checked before use.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                stop - start,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                start as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(RingMap {
            base: NonNull::new(p.cast()).ok_or_else(|| io::Error::other("mmap returned null"))?,
            len: stop - start,
            offset: start,
            stride,
            first,
            end,
        })
    }

    /// Stores `values` into elements `at..at + values.len()`, which must lie in the mapped range.
    pub fn write(&mut self, at: u32, values: &[u32]) -> io::Result<()> {
        let stop = at as u64 + values.len() as u64;
        if at < self.first || stop > self.end as u64 {
            return Err(io::Error::other(format!(
                "elements {at}..{stop} outside the mapped {}..{}",
                self.first, self.end
            )));
        }
        for (i, v) in values.iter().enumerate() {
            let off = (at as usize + i) * self.stride - self.offset;
            debug_assert!(off + 4 <= self.len);
            // SAFETY: `off` lies inside the mapping (the element range was checked against
            // `first..end`, which `map` covered) and is 8-byte aligned within a page-aligned
            // mapping, so the pointer is valid and aligned for a u32. The program may read the
            // map concurrently (never these elements before `publish`), hence an atomic store,
            // which compiles to a plain one.
            unsafe {
                let p = self.base.as_ptr().add(off).cast::<AtomicU32>();
                (*p).store(*v, Ordering::Relaxed);
            }
        }
        Ok(())
    }
}

impl Drop for RingMap {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` are exactly the mapping `map` created, unmapped only here; no
        // reference into it outlives `self`.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.len);
        }
    }
}

/// Orders every ring store before what follows: called before the `SERVICES` update that makes
/// the program use a ring. (The update is a syscall, which the CPU and compiler do not reorder
/// stores across either; the fence states the requirement where the code relies on it.)
pub fn publish() {
    fence(Ordering::Release);
}
