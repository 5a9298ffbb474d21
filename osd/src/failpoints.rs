//! Crash points for tests. Built with the `failpoints` feature (the test build turns it
//! on; a release build has none of this), an OSD reads `FAILPOINTS` from its environment
//! at start, `NAME=ACTIONS` pairs split by `;`, and exits at a point whose action says
//! `return`, as a crash would: no cleanup, nothing flushed that was not already. So a
//! test hits the window it means to, instead of killing the process and hoping. Actions
//! are the fail crate's: `return` every time, `2*off->return` the third time.
//!
//! A delay point instead holds the task that reaches it: `return(MS)` waits MS
//! milliseconds there (without blocking the runtime's thread), so a test can hold a
//! window open that is otherwise a few microseconds wide.
//!
//! The crash points:
//! - `osd::write_applied`: a primary applied a client write to its store, and has neither
//!   replicated it nor made it durable;
//! - `osd::write_replicated`: every copy has a write durably, and the client has no answer;
//! - `osd::backfill_pushed`: a backfill target holds a pushed object, and the walk has not
//!   moved on;
//! - `osd::peering_decided`: a peering round has its plan, and nothing was activated.
//!
//! The delay points:
//! - `osd::map_arrived`: the OSD has a new map, and has handed it to none of its PGs.

/// The crash and delay points there are (a name not here is refused, not ignored).
pub const POINTS: [&str; 5] = [
    "osd::write_applied",
    "osd::write_replicated",
    "osd::backfill_pushed",
    "osd::peering_decided",
    "osd::map_arrived",
];

/// The exit status of an OSD that stopped at a crash point.
pub const CRASH_EXIT_CODE: i32 = 86;

/// Configures the crash points `FAILPOINTS` names; a clear error for a name that is no
/// crash point, actions the fail crate cannot parse, or a build without them.
pub fn configure_from_env() -> anyhow::Result<()> {
    let Ok(spec) = std::env::var("FAILPOINTS") else { return Ok(()) };
    configure(&spec)
}

fn configure(spec: &str) -> anyhow::Result<()> {
    for entry in spec.split(';').map(str::trim).filter(|e| !e.is_empty()) {
        let Some((name, actions)) = entry.split_once('=') else {
            anyhow::bail!("FAILPOINTS: '{entry}' is not NAME=ACTIONS");
        };
        let name = name.trim();
        if !POINTS.contains(&name) {
            anyhow::bail!("FAILPOINTS: no crash point '{name}' (there are {})", POINTS.join(", "));
        }
        set(name, actions.trim())?;
        tracing::warn!(point = name, actions, "crash point armed");
    }
    Ok(())
}

#[cfg(feature = "failpoints")]
fn set(name: &str, actions: &str) -> anyhow::Result<()> {
    fail::cfg(name, actions).map_err(|e| anyhow::anyhow!("FAILPOINTS: {name}: {e}"))
}

#[cfg(not(feature = "failpoints"))]
fn set(name: &str, _actions: &str) -> anyhow::Result<()> {
    anyhow::bail!(
        "FAILPOINTS names {name}, but this build has no crash points (feature failpoints)"
    )
}

/// Ends the process at crash point `point`, as a crash would.
#[cfg(feature = "failpoints")]
pub fn crash(point: &str) -> ! {
    tracing::warn!(point, "crash point reached: exiting");
    // SAFETY: _exit(2) ends the process without running anything else; nothing is shared.
    unsafe { libc::_exit(CRASH_EXIT_CODE) }
}

/// Waits at delay point `point` as long as its `return(MS)` action says; a point that is
/// off, or an action without a number of milliseconds, does not wait.
#[cfg(feature = "failpoints")]
pub async fn delay(point: &str) {
    let ms = fail::eval(point, |ms| ms.and_then(|ms| ms.parse::<u64>().ok())).flatten();
    if let Some(ms) = ms {
        tracing::warn!(point, ms, "delay point reached: waiting");
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
}

/// A delay point: nothing at all without the `failpoints` feature.
#[cfg(not(feature = "failpoints"))]
pub async fn delay(_point: &str) {}

/// A crash point (see the module's doc); nothing at all without the `failpoints` feature.
#[macro_export]
#[cfg(feature = "failpoints")]
macro_rules! crash_point {
    ($name:literal) => {
        fail::fail_point!($name, |_| $crate::failpoints::crash($name))
    };
}

/// A crash point (see the module's doc); nothing at all without the `failpoints` feature.
#[macro_export]
#[cfg(not(feature = "failpoints"))]
macro_rules! crash_point {
    ($name:literal) => {};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_crash_point_specs_are_clear_errors() {
        let unknown = configure("osd::nowhere=return").unwrap_err().to_string();
        assert!(unknown.contains("no crash point 'osd::nowhere'"), "{unknown}");
        assert!(unknown.contains("osd::write_applied"), "{unknown}");
        let shapeless = configure("osd::write_applied").unwrap_err().to_string();
        assert!(shapeless.contains("is not NAME=ACTIONS"), "{shapeless}");
        assert!(configure(" ; ").is_ok(), "empty entries are skipped");
        if cfg!(feature = "failpoints") {
            let actions = configure("osd::write_applied=sometimes").unwrap_err().to_string();
            assert!(actions.contains("osd::write_applied"), "{actions}");
            // A good spec arms the point; `off` leaves it harmless for the other tests.
            configure("osd::write_applied=off").unwrap();
        } else {
            let none = configure("osd::write_applied=return").unwrap_err().to_string();
            assert!(none.contains("this build has no crash points"), "{none}");
        }
    }
}
