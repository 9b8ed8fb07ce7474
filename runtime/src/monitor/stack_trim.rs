//! Handing back the stack pages a one-time deep path touched.
//!
//! The monitor lives as long as its pod and spends that time in a shallow loop, but a
//! CreateContainer (the launcher's setup, a spec's outline, a clone) runs some 20 KiB
//! deeper once. The kernel keeps every stack page ever touched, so each monitor held
//! that high-water mark for good. After a request the loop calls
//! [`StackTrim::release_below_here`]: the pages below the current frame are dead (the
//! stack grows down and nothing lives below the stack pointer: the monitor installs
//! no signal handlers, its signals go to a signalfd), so `MADV_DONTNEED` drops them
//! and the next deep call gets fresh zero pages.
#![allow(unsafe_code)]

/// What of the frame calling [`StackTrim::release_below_here`] and the calls it
/// makes (madvise) must stay: kept resident below its locals.
const KEEP_BELOW: usize = 8 * 1024;

const PAGE: usize = 4096;

/// A stack mapping `[low, high)` as it was when read. A stack only grows down, so
/// everything in that range stays inside it.
pub(super) struct StackTrim {
    low: usize,
    high: usize,
}

impl StackTrim {
    /// The main thread's stack (`[stack]` in `/proc/self/maps`); `None` where there
    /// is none to find (then nothing is trimmed).
    pub(super) fn main_thread() -> Option<Self> {
        Self::find(|line, _, _| line.ends_with("[stack]"))
    }

    fn find(wanted: impl Fn(&str, usize, usize) -> bool) -> Option<Self> {
        let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
        maps.lines().find_map(|line| {
            let (low, rest) = line.split_once('-')?;
            let high = rest.split(' ').next()?;
            let low = usize::from_str_radix(low, 16).ok()?;
            let high = usize::from_str_radix(high, 16).ok()?;
            wanted(line, low, high).then_some(StackTrim { low, high })
        })
    }

    /// Drops the stack pages more than [`KEEP_BELOW`] under this call's frame, if
    /// this frame is on the stack `self` describes (a call from another thread does
    /// nothing). Call it from the loop's own shallow frame, between requests.
    #[inline(never)]
    pub(super) fn release_below_here(&self) {
        let marker = 0u8;
        let here = std::ptr::addr_of!(marker) as usize;
        if !(self.low < here && here < self.high) {
            return;
        }
        let end = here.saturating_sub(KEEP_BELOW) & !(PAGE - 1);
        if end > self.low {
            // SAFETY: [low, end) lies inside this thread's stack mapping and below
            // every live frame: the callers' frames are above `here`, and what this
            // call runs (madvise) uses less than KEEP_BELOW. With no signal handler
            // nothing else writes there. MADV_DONTNEED on private anonymous memory
            // only makes its next touch a zero page.
            unsafe {
                libc::madvise(
                    self.low as *mut libc::c_void,
                    end - self.low,
                    libc::MADV_DONTNEED,
                );
            }
        }
        std::hint::black_box(&marker);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Touches `kib` KiB of stack, each KiB written; returns a checksum.
    #[inline(never)]
    fn deep(kib: usize) -> u8 {
        let mut chunk = [0u8; 1024];
        chunk[kib % 1024] = kib as u8;
        let below = if kib > 0 { deep(kib - 1) } else { 0 };
        std::hint::black_box(&mut chunk)[kib % 1024].wrapping_add(below)
    }

    /// Resident KiB of the mapping `[low, high)`, from `/proc/self/smaps`.
    fn resident_kib(t: &StackTrim) -> u64 {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let header = format!("{:x}-{:x} ", t.low, t.high);
        let at = smaps.find(&header).expect("the mapping is listed");
        smaps[at..]
            .lines()
            .find_map(|l| l.strip_prefix("Rss:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    #[test]
    fn pages_below_the_frame_go_and_the_stack_still_works() {
        // This test's own thread stack stands for the monitor's main stack.
        let marker = 0u8;
        let here = std::ptr::addr_of!(marker) as usize;
        let trim = StackTrim::find(|_, low, high| low <= here && here < high).unwrap();
        let sum = deep(256);
        let before = resident_kib(&trim);
        trim.release_below_here();
        let after = resident_kib(&trim);
        assert!(
            after + 200 <= before,
            "resident stack {before} KiB before, {after} KiB after"
        );
        assert_eq!(deep(256), sum, "the released pages work as fresh stack");
        std::hint::black_box(&marker);
    }

    #[test]
    fn a_frame_outside_the_mapping_trims_nothing() {
        let marker = 0u8;
        let here = std::ptr::addr_of!(marker) as usize;
        let own = StackTrim::find(|_, low, high| low <= here && here < high).unwrap();
        deep(256);
        let before = resident_kib(&own);
        // A mapping that ends below this frame: as if called from another thread's
        // stack; the pages under the frame are then not ours to drop.
        let elsewhere = StackTrim {
            low: own.low,
            high: (here & !(PAGE - 1)) - PAGE,
        };
        elsewhere.release_below_here();
        let after = resident_kib(&own);
        assert!(
            after + 64 > before,
            "stack {before} KiB before, {after} KiB after"
        );
        assert!(StackTrim::main_thread().is_some(), "a [stack] mapping");
        std::hint::black_box(&marker);
    }
}
