//! Per-phase timing of the fast forward, for finding where the time goes.
//!
//! Switched on by the environment variable `MHA_PHASE_TIMES=1`, read once (the first time a
//! phase is timed); when it is off a timed phase costs one relaxed atomic load. Times add up
//! over calls and threads until [`reset_phase_times`]; [`phase_times`] reads them.
//!
//! The phases of one call, in order: `pack` (input rows gathered into a dense copy, only for
//! inputs that are not already rows in memory, and the workspace), `qkv_projection`,
//! `layout_copy` (keys and values copied head-major for long queries, and the final output
//! layout copy), `attention`, `out_projection`, and `fan_out`: the time threads of a parallel
//! region spent not running work items (dispatch, waiting for the slowest item), summed over
//! the regions and divided by the region's thread count, so it reads as wall-clock time.
//!
//! A phase runs its work items as a [`Region`]: over the caller's rayon pool, or, inside a batch
//! group that one thread runs whole, one after another on that thread ([`Split`]).

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::time::{Duration, Instant};

use rayon::prelude::*;

/// A timed phase of the fast forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Dense copies of strided inputs and the workspace.
    Pack,
    /// The input projections.
    QkvProjection,
    /// Head-major key / value copies and the output's final layout copy.
    LayoutCopy,
    /// The attention kernels.
    Attention,
    /// The output projection.
    OutProjection,
    /// Idle thread time in parallel regions (dispatch and imbalance), as wall-clock time.
    FanOut,
}

impl Phase {
    /// Every phase, in the order of a call.
    pub const ALL: [Phase; 6] = [
        Phase::Pack,
        Phase::QkvProjection,
        Phase::LayoutCopy,
        Phase::Attention,
        Phase::OutProjection,
        Phase::FanOut,
    ];

    /// The phase's name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Pack => "pack",
            Phase::QkvProjection => "qkv_projection",
            Phase::LayoutCopy => "layout_copy",
            Phase::Attention => "attention",
            Phase::OutProjection => "out_projection",
            Phase::FanOut => "fan_out",
        }
    }
}

static NANOS: [AtomicU64; 6] = [const { AtomicU64::new(0) }; 6];
/// 0 = not read yet, 1 = off, 2 = on.
static STATE: AtomicU8 = AtomicU8::new(0);

/// Whether phase timing is on (`MHA_PHASE_TIMES` set to anything but `0` or empty).
#[inline]
pub fn enabled() -> bool {
    match STATE.load(Ordering::Relaxed) {
        0 => {
            let on = std::env::var_os("MHA_PHASE_TIMES").is_some_and(|v| !v.is_empty() && v != "0");
            STATE.store(if on { 2 } else { 1 }, Ordering::Relaxed);
            on
        }
        state => state == 2,
    }
}

/// The accumulated time of every phase since the last reset (zero when timing is off).
pub fn phase_times() -> Vec<(Phase, Duration)> {
    Phase::ALL
        .iter()
        .map(|&p| {
            let ns = NANOS[p as usize].load(Ordering::Relaxed);
            (p, Duration::from_nanos(ns))
        })
        .collect()
}

/// Sets every phase's accumulated time back to zero.
pub fn reset_phase_times() {
    for n in &NANOS {
        n.store(0, Ordering::Relaxed);
    }
}

pub(crate) fn add(phase: Phase, time: Duration) {
    let ns = u64::try_from(time.as_nanos()).unwrap_or(u64::MAX);
    NANOS[phase as usize].fetch_add(ns, Ordering::Relaxed);
}

/// Runs `f`, adding its wall time to `phase` when timing is on.
#[inline]
pub(crate) fn timed<R>(phase: Phase, f: impl FnOnce() -> R) -> R {
    if !enabled() {
        return f();
    }
    let start = Instant::now();
    let result = f();
    add(phase, start.elapsed());
    result
}

/// How a phase runs its work items.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Split {
    /// Over the caller's rayon pool: one parallel region.
    Pool,
    /// One after another on this thread: the phase belongs to a batch group that a thread runs
    /// whole, while `concurrent` groups run at once (the phase's time is divided by it, so
    /// phase times still read as wall-clock time).
    Inline { concurrent: usize },
}

impl Split {
    /// The threads a phase's items can run on.
    pub(crate) fn threads(self) -> usize {
        match self {
            Split::Pool => rayon::current_num_threads().max(1),
            Split::Inline { .. } => 1,
        }
    }
}

/// One phase's work items, run as its [`Split`] says, with their busy time for the phase's
/// [`Phase::FanOut`] share.
pub(crate) struct Region {
    split: Split,
    start: Option<Instant>,
    busy_ns: AtomicU64,
}

impl Region {
    /// Starts a region (its timing is a no-op when timing is off).
    pub(crate) fn start(split: Split) -> Self {
        Self {
            split,
            start: enabled().then(Instant::now),
            busy_ns: AtomicU64::new(0),
        }
    }

    /// Runs `item(0)`, ..., `item(units - 1)`: in parallel over the pool (when there is more
    /// than one), else in order on this thread.
    pub(crate) fn for_each(&self, units: usize, item: impl Fn(usize) + Send + Sync) {
        let run = |unit| self.timed_item(|| item(unit));
        match self.split {
            Split::Pool if units > 1 => (0..units).into_par_iter().for_each(run),
            _ => (0..units).for_each(run),
        }
    }

    /// Runs one work item, counting its time as busy.
    #[inline]
    fn timed_item<R>(&self, f: impl FnOnce() -> R) -> R {
        if self.start.is_none() {
            return f();
        }
        let start = Instant::now();
        let result = f();
        let ns = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.busy_ns.fetch_add(ns, Ordering::Relaxed);
        result
    }

    /// Ends the region that ran `units` units: on the pool, its wall time goes to `phase` and
    /// its threads' idle time (divided by the threads it could use) to [`Phase::FanOut`];
    /// inline, its wall time divided by the concurrent groups goes to `phase`.
    pub(crate) fn finish(self, phase: Phase, units: usize) {
        let Some(start) = self.start else { return };
        match self.split {
            Split::Pool => {
                let (work, idle) =
                    work_and_idle(start.elapsed(), self.busy(), self.pool_threads(units));
                add(phase, work);
                add(Phase::FanOut, idle);
            }
            Split::Inline { concurrent } => {
                let concurrent = u32::try_from(concurrent.max(1)).unwrap_or(u32::MAX);
                add(phase, start.elapsed() / concurrent);
            }
        }
    }

    /// Ends a region whose units timed their own phases (batch groups): only its threads' idle
    /// time goes to [`Phase::FanOut`].
    pub(crate) fn finish_idle(self, units: usize) {
        let Some(start) = self.start else { return };
        let (_, idle) = work_and_idle(start.elapsed(), self.busy(), self.pool_threads(units));
        add(Phase::FanOut, idle);
    }

    fn busy(&self) -> Duration {
        Duration::from_nanos(self.busy_ns.load(Ordering::Relaxed))
    }

    /// The threads `units` units keep busy at most.
    fn pool_threads(&self, units: usize) -> usize {
        self.split.threads().min(units).max(1)
    }
}

/// A region's wall time split into work and idle (as wall-clock time) when its `threads`
/// threads were busy for `busy` in all.
fn work_and_idle(wall: Duration, busy: Duration, threads: usize) -> (Duration, Duration) {
    let threads = threads.max(1) as u32;
    let idle = (wall * threads).saturating_sub(busy) / threads;
    (wall.saturating_sub(idle), idle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_threads_count_as_fan_out() {
        let ms = Duration::from_millis;
        // One of two threads busy for the whole 20 ms region: 10 ms of it idle.
        assert_eq!(work_and_idle(ms(20), ms(20), 2), (ms(10), ms(10)));
        // All busy: no fan-out; busy beyond the wall time (clock skew) saturates.
        assert_eq!(work_and_idle(ms(20), ms(40), 2), (ms(20), ms(0)));
        assert_eq!(work_and_idle(ms(20), ms(50), 2), (ms(20), ms(0)));
        assert_eq!(work_and_idle(ms(20), ms(5), 1), (ms(5), ms(15)));
    }
}
