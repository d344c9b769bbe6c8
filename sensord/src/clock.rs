//! The daemon's two clocks.
//!
//! *Sensor time* runs every deadline: flow idle timeouts, half-close grace, probe rate limits
//! and caches, /proc rescans. It is CLOCK_BOOTTIME (the clock the kernel stamps records with)
//! plus the wall clock's offset at start: no NTP step or `date -s` moves it, so a step cannot
//! expire every open flow at once or keep them forever, and it keeps counting through a
//! suspend, so a flow idle across one is as old as it looks.
//!
//! *Wall time* is only for what people and other systems read: an event's times, and the
//! certificate validity checked at them. The difference between the two is measured again on
//! every tick and applied to each event as it leaves the engine.

use sensor_core::capture::ring::ClockOffset;

/// Reads CLOCK_BOOTTIME and CLOCK_REALTIME.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    start: ClockOffset,
}

impl Clock {
    /// The clocks as they read now.
    pub fn start() -> Self {
        Self::from_offset(offset(
            read(libc::CLOCK_BOOTTIME),
            read(libc::CLOCK_REALTIME),
        ))
    }

    fn from_offset(start: ClockOffset) -> Self {
        Self { start }
    }

    /// Converts the kernel's timestamps to sensor time.
    pub fn kernel(&self) -> ClockOffset {
        self.start
    }

    /// Sensor time now.
    pub fn now_ns(&self) -> u64 {
        self.start.to_epoch_ns(read_u64(libc::CLOCK_BOOTTIME))
    }

    /// What to add to a sensor time to get the wall clock's reading for it now.
    pub fn wall_shift_ns(&self) -> i64 {
        self.shift_at(read(libc::CLOCK_BOOTTIME), read(libc::CLOCK_REALTIME))
    }

    fn shift_at(&self, boot: i128, real: i128) -> i64 {
        let now = offset(boot, real).ns() - self.start.ns();
        i64::try_from(now).unwrap_or(if now < 0 { i64::MIN } else { i64::MAX })
    }
}

fn offset(boot: i128, real: i128) -> ClockOffset {
    ClockOffset::new(real - boot)
}

fn read(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime with a valid pointer; both clocks exist on every Linux the sensor
    // runs on (BOOTTIME since 2.6.39).
    unsafe { libc::clock_gettime(clock, &mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

fn read_u64(clock: libc::clockid_t) -> u64 {
    u64::try_from(read(clock).max(0)).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i128 = 3_600_000_000_000;

    #[test]
    fn a_wall_clock_step_moves_event_times_but_no_deadline() {
        // Started 100 s after boot, at 1,700,000,000 s of wall time.
        let boot0 = 100_000_000_000i128;
        let real0 = 1_700_000_000_000_000_000i128;
        let clock = Clock::from_offset(offset(boot0, real0));
        let kernel_ts = |boot: i128| clock.kernel().to_epoch_ns(boot as u64);
        // 10 s later the wall clock is stepped an hour forward, then an hour back.
        let boot1 = boot0 + 10_000_000_000;
        for step in [HOUR, -HOUR] {
            let real1 = real0 + 10_000_000_000 + step;
            // Sensor time advanced by the 10 s that passed, not by the step: a segment from
            // 1 s earlier is 1 s old, so no flow expires early (or lives on forever).
            assert_eq!(
                kernel_ts(boot1) - kernel_ts(boot1 - 1_000_000_000),
                1_000_000_000
            );
            assert_eq!(kernel_ts(boot1) as i128, real0 + 10_000_000_000);
            // The event's time as people read it follows the wall clock.
            let shift = clock.shift_at(boot1, real1);
            assert_eq!(i128::from(shift), step);
            let shown = sensor_core::event::Timestamp(kernel_ts(boot1)).shifted(shift);
            assert_eq!(i128::from(shown.0), real1);
        }
        // A suspend advances both clocks alike: no shift.
        assert_eq!(clock.shift_at(boot0 + HOUR, real0 + HOUR), 0);
    }

    #[test]
    fn the_clocks_read_sensibly() {
        let clock = Clock::start();
        let a = clock.now_ns();
        let b = clock.now_ns();
        assert!(b >= a && a > 1_600_000_000_000_000_000);
        assert!(clock.wall_shift_ns().abs() < 1_000_000_000);
    }
}
