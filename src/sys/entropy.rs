//! Random bytes from the kernel's CSPRNG (`getrandom(2)`) for session and
//! peer ids, taken 4 KiB at a time per thread (one system call per 256
//! session ids instead of one per id); each byte is handed out once and
//! wiped from the pool.

use std::cell::RefCell;

const POOL: usize = 4096;

struct Pool {
    bytes: [u8; POOL],
    next: usize,
}

thread_local! {
    static LOCAL: RefCell<Pool> = const {
        RefCell::new(Pool { bytes: [0; POOL], next: POOL })
    };
}

fn getrandom(buf: &mut [u8]) {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: `rest` is valid for writes of rest.len() bytes.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n > 0 {
            done += n as usize;
            continue;
        }
        let err = std::io::Error::last_os_error();
        assert!(
            err.kind() == std::io::ErrorKind::Interrupted,
            "getrandom failed: {err}"
        );
    }
}

/// Fills `out` (at most 64 bytes) with fresh random bytes.
pub fn fill(out: &mut [u8]) {
    assert!(
        out.len() <= 64,
        "entropy::fill hands out ids, not bulk data"
    );
    LOCAL.with(|pool| {
        let mut pool = pool.borrow_mut();
        if pool.next + out.len() > POOL {
            getrandom(&mut pool.bytes);
            pool.next = 0;
        }
        let at = pool.next;
        pool.next += out.len();
        out.copy_from_slice(&pool.bytes[at..at + out.len()]);
        pool.bytes[at..at + out.len()].fill(0);
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn hands_out_distinct_bytes_across_refills() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1000 {
            let mut id = [0u8; 16];
            super::fill(&mut id);
            assert!(seen.insert(id), "a repeated id");
        }
    }
}
