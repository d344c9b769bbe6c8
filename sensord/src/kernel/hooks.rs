//! What each optional hook did: attached, or why not. Shown in the log, `sensorctl status`
//! and the metrics.

/// Whether a hook attached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookStatus {
    pub name: &'static str,
    pub attached: bool,
    /// Where it attached, or why it did not.
    pub detail: String,
    /// The kernel's id of the loaded program, when it loaded.
    pub program_id: Option<u32>,
}
