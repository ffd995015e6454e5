//! The vocabulary of a passage that both sides of the terminal code speak: what the terminal
//! decided ([`PassageVerdict`]), whether a mask was worn ([`MaskState`]) and which way the
//! person went ([`Direction`]). A profile ([`super::profile`]) maps a vendor's codes onto
//! these; [`super::decode()`] puts them into a [`PassageRecorded`](super::PassageRecorded).
//! Kept apart so that neither of the two imports the other for them.

use serde::{Deserialize, Serialize};

/// What the terminal decided about the person in front of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PassageVerdict {
    /// Recognised (or otherwise verified) and let through.
    Pass,
    /// Recognition or verification failed, or the person had no permission now. Usually
    /// followed by a retry, so not a visit by itself.
    Fail,
    /// A face that is not a registered member.
    Stranger,
    /// Turned away because of an abnormal temperature.
    RefusedFever,
}

impl PassageVerdict {
    pub fn as_str(self) -> &'static str {
        match self {
            PassageVerdict::Pass => "pass",
            PassageVerdict::Fail => "fail",
            PassageVerdict::Stranger => "stranger",
            PassageVerdict::RefusedFever => "refused_fever",
        }
    }
}

/// Whether a mask was worn, where the terminal checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaskState {
    On,
    Off,
    Unknown,
}

/// Which way the person went, where the terminal says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    In,
    Out,
    Unknown,
}
