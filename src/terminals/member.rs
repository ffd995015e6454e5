//! Member identities, reduced on the box to a daily-salted hash for counting unique visitors.
//!
//! A terminal names the member it recognised by the id the hall registered (`employeeNo`,
//! `UserID`, `personId`). The gateway needs that id for one thing only: "how many different
//! people came today". So the id is wrapped in a [`MemberRef`] that prints redacted, and the
//! driver turns it at once into a [`MemberHash`]: HMAC-SHA256 of the id under a 32-byte random
//! salt that changes at every day boundary, cut to 16 bytes. Within a day the same member
//! gives the same hash (distinct counts work); across days, and without the salt, hashes
//! cannot be linked back to a member or to each other. The old salt is dropped when the day
//! changes. Names are never read at all (no profile can map them).
//!
//! Persistence of the salt — a choice for the caller, exposed through [`LocalSaltState`]:
//! - not persisted: a restart mid-day draws a new salt, and a member seen before and after
//!   the restart counts as two unique visitors that day;
//! - persisted locally (recommended): save [`MemberHasher::local_state`] with the engine
//!   state on the box, [`restore`](MemberHasher::restore) it at start-up; unique counts stay
//!   right across restarts, and the salt still dies with its day.
//!
//! Either way the salt must never be part of anything sent to the centre: with the salt and a
//! list of member ids anyone could re-identify the hashes. It has its own type, whose `Debug`
//! is redacted, and no uplink payload type includes it.

use std::fmt;

use hmac::{Hmac, Mac};
use jiff::civil::Date;
use rand::RngCore;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::Sha256;

/// Domain separation: a hash from this scheme can never equal one made for another purpose
/// with the same salt.
const DOMAIN: &[u8] = b"hallgate/member/v1\0";

/// A member id as a terminal sent it. Only [`MemberHasher`] looks inside; `Debug` prints
/// `MemberRef(<redacted>)`, and there is no `Display` or `Serialize`.
#[derive(Clone, PartialEq, Eq)]
pub struct MemberRef(String);

impl MemberRef {
    pub fn new(raw: impl Into<String>) -> Self {
        MemberRef(raw.into())
    }
}

impl fmt::Debug for MemberRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MemberRef(<redacted>)")
    }
}

/// An opaque per-day visitor token: equal for the same member on the same day, unrelated
/// otherwise. Fine to keep in the engine's local state; it still never leaves the box (the
/// uplink carries counts).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MemberHash([u8; 16]);

impl MemberHash {
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Display for MemberHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for MemberHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MemberHash({self})")
    }
}

impl Serialize for MemberHash {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MemberHash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        from_hex::<16>(&text)
            .map(MemberHash)
            .ok_or_else(|| serde::de::Error::custom("a member hash is 32 hex digits"))
    }
}

/// The day's salt. `Debug` is redacted; serialised only inside [`LocalSaltState`].
#[derive(Clone, PartialEq, Eq)]
struct DailySalt([u8; 32]);

impl fmt::Debug for DailySalt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DailySalt(<redacted>)")
    }
}

/// The hasher's state for saving **on the box only** (see the module docs): the day and its
/// salt. Never put it in anything bound for the centre.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalSaltState {
    pub day: Date,
    #[serde(serialize_with = "salt_to_hex", deserialize_with = "salt_from_hex")]
    salt: DailySalt,
}

fn salt_to_hex<S: Serializer>(salt: &DailySalt, s: S) -> Result<S::Ok, S::Error> {
    let hex: String = salt.0.iter().map(|b| format!("{b:02x}")).collect();
    s.serialize_str(&hex)
}

fn salt_from_hex<'de, D: Deserializer<'de>>(d: D) -> Result<DailySalt, D::Error> {
    let text = String::deserialize(d)?;
    from_hex::<32>(&text)
        .map(DailySalt)
        .ok_or_else(|| serde::de::Error::custom("a salt is 64 hex digits"))
}

fn from_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != 2 * N || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

type SaltSource = Box<dyn FnMut() -> [u8; 32] + Send>;

/// Turns member ids into [`MemberHash`]es under a salt that rotates with the day.
pub struct MemberHasher {
    current: Option<(Date, DailySalt)>,
    fresh_salt: SaltSource,
}

impl fmt::Debug for MemberHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemberHasher")
            .field("day", &self.day())
            .finish_non_exhaustive()
    }
}

impl Default for MemberHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl MemberHasher {
    /// A hasher drawing salts from the thread's CSPRNG (ChaCha, seeded from the OS).
    pub fn new() -> Self {
        Self::with_salt_source(|| {
            let mut salt = [0u8; 32];
            rand::rng().fill_bytes(&mut salt);
            salt
        })
    }

    /// A hasher drawing salts from `source`; tests use a fixed sequence.
    pub fn with_salt_source(source: impl FnMut() -> [u8; 32] + Send + 'static) -> Self {
        MemberHasher {
            current: None,
            fresh_salt: Box::new(source),
        }
    }

    /// The member's token for `day` (the hall's local date). The first call on a new day
    /// draws a new salt and drops the old one.
    pub fn hash(&mut self, day: Date, member: &MemberRef) -> MemberHash {
        let salt = match &self.current {
            Some((d, salt)) if *d == day => salt.0,
            _ => {
                // Overwriting `current` drops the old day's salt.
                let salt = (self.fresh_salt)();
                self.current = Some((day, DailySalt(salt)));
                salt
            }
        };
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&salt).expect("HMAC takes keys of any length");
        mac.update(DOMAIN);
        mac.update(member.0.as_bytes());
        let digest = mac.finalize().into_bytes();
        let mut out = [0u8; 16];
        out.copy_from_slice(&digest[..16]);
        MemberHash(out)
    }

    /// The day of the current salt, if one was drawn or restored.
    pub fn day(&self) -> Option<Date> {
        self.current.as_ref().map(|(d, _)| *d)
    }

    /// The day and salt, to save on the box (see the module docs); `None` before the first
    /// hash.
    pub fn local_state(&self) -> Option<LocalSaltState> {
        self.current.as_ref().map(|(day, salt)| LocalSaltState {
            day: *day,
            salt: salt.clone(),
        })
    }

    /// Takes up a saved salt. A salt for another day than the next [`hash`](Self::hash) asks
    /// about is replaced then, so restoring yesterday's state is harmless.
    pub fn restore(&mut self, state: LocalSaltState) {
        self.current = Some((state.day, state.salt));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    fn counting_hasher() -> MemberHasher {
        let mut n = 0u8;
        MemberHasher::with_salt_source(move || {
            n += 1;
            [n; 32]
        })
    }

    #[test]
    fn the_same_member_hashes_alike_within_a_day_and_differently_across_days() {
        let mut h = counting_hasher();
        let (a, b) = (MemberRef::new("4366"), MemberRef::new("5054"));
        let day1 = date(2024, 3, 5);
        let first = h.hash(day1, &a);
        assert_eq!(h.hash(day1, &a), first);
        assert_ne!(h.hash(day1, &b), first);
        let next_day = h.hash(date(2024, 3, 6), &a);
        assert_ne!(next_day, first, "the salt rotated");
        assert_ne!(h.hash(day1, &a), first, "yesterday's salt is gone for good");
    }

    #[test]
    fn a_restored_salt_keeps_unique_counts_right_across_a_restart() {
        let day = date(2024, 3, 5);
        let member = MemberRef::new("4366");
        let mut before = MemberHasher::new();
        let token = before.hash(day, &member);
        let saved = serde_json::to_string(&before.local_state().expect("state")).expect("json");
        let mut after = MemberHasher::new();
        after.restore(serde_json::from_str(&saved).expect("restores"));
        assert_eq!(after.hash(day, &member), token);
        let mut fresh = MemberHasher::new();
        assert_ne!(fresh.hash(day, &member), token, "without the salt, no link");
    }

    #[test]
    fn ids_and_salts_never_show_in_debug_output() {
        let member = MemberRef::new("4366-secret");
        assert_eq!(format!("{member:?}"), "MemberRef(<redacted>)");
        let mut h = counting_hasher();
        h.hash(date(2024, 3, 5), &member);
        let state = h.local_state().expect("state");
        let shown = format!("{h:?} {state:?}");
        assert!(
            !shown.contains("4366") && !shown.contains("[1, 1"),
            "{shown}"
        );
        assert!(shown.contains("<redacted>"));
    }

    #[test]
    fn member_hashes_round_trip_as_hex() {
        let mut h = counting_hasher();
        let token = h.hash(date(2024, 3, 5), &MemberRef::new("x"));
        let json = serde_json::to_string(&token).expect("json");
        assert_eq!(json.len(), 34);
        assert_eq!(
            serde_json::from_str::<MemberHash>(&json).expect("hex"),
            token
        );
        assert!(serde_json::from_str::<MemberHash>("\"zz\"").is_err());
    }

    #[test]
    fn the_hash_is_hmac_sha256_of_the_domain_and_id_cut_to_16_bytes() {
        let mut h = MemberHasher::with_salt_source(|| [7; 32]);
        let token = h.hash(date(2024, 3, 5), &MemberRef::new("abc"));
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&[7; 32]).expect("any key");
        mac.update(b"hallgate/member/v1\0abc");
        assert_eq!(token.as_bytes()[..], mac.finalize().into_bytes()[..16]);
    }
}
