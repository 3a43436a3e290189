//! Typed values the nodes report as text: a node's [`Role`], its [`Membership`] in the
//! configuration it uses, a configured member's [`MemberKind`], and [`Zxid`]s.
//!
//! Each displays and serializes exactly as the node spells it (`leader`, `voter`, `3:17`), so
//! the CLI's text and JSON output are those strings. A word this client does not know (from a
//! newer node) is kept as `Other(word)` instead of being an error: it shows as it came.

use std::fmt;
use std::str::FromStr;

use guessgame_wire::proto as pb;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An enum of known words plus `Other(String)` for any other word: `as_str` is the word;
/// `Display` (honouring width and alignment, as `{:<10}` in the tables), serde, `From<&str>`
/// and `FromStr` all go through it; equality and hashing are by the word, and comparing with
/// a `&str` compares the word.
macro_rules! word_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident => $word:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
            /// A word this client does not know (e.g. from a newer node), as it came.
            Other(String),
        }

        impl $name {
            /// The word, as the node reports it.
            pub fn as_str(&self) -> &str {
                match self {
                    $( $name::$variant => $word, )+
                    $name::Other(s) => s,
                }
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                match s {
                    $( $word => $name::$variant, )+
                    other => $name::Other(other.to_string()),
                }
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                match $name::from(s.as_str()) {
                    $name::Other(_) => $name::Other(s),
                    known => known,
                }
            }
        }

        impl FromStr for $name {
            type Err = std::convert::Infallible;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Ok(s.into())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(self.as_str())
            }
        }

        impl PartialEq for $name {
            fn eq(&self, other: &Self) -> bool {
                self.as_str() == other.as_str()
            }
        }

        impl Eq for $name {}

        impl std::hash::Hash for $name {
            fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
                self.as_str().hash(state)
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.as_str() == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                Ok(String::deserialize(d)?.into())
            }
        }
    };
}

word_enum! {
    /// A node's role (`Status.role`), or [`Role::Unreachable`] when it did not answer.
    pub enum Role {
        Leader => "leader",
        Follower => "follower",
        /// Electing a leader (no leader known).
        Looking => "looking",
        /// Said by this client, not by a node: the node did not answer.
        Unreachable => "unreachable",
    }
}

word_enum! {
    /// Where a node stands in the configuration it uses (`Status.membership`).
    pub enum Membership {
        Voter => "voter",
        Learner => "learner",
        /// Not in the configuration: waiting to be added, or removed.
        NotMember => "none",
        /// A leader told the node it is not in the committed configuration (`Status.removed`).
        Removed => "removed",
        /// Said by this client, not by a node: the node did not answer.
        Unknown => "unknown",
    }
}

word_enum! {
    /// A configured member's kind (`Member.voter`).
    pub enum MemberKind {
        Voter => "voter",
        Learner => "learner",
    }
}

impl From<MemberKind> for Membership {
    fn from(k: MemberKind) -> Self {
        Membership::from(k.as_str())
    }
}

/// A transaction id, `(epoch, counter)`, ordered by epoch then counter; shown as
/// `epoch:counter` (`3:17`), as the nodes show it. `0:0`: nothing logged yet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Zxid {
    pub epoch: u64,
    pub counter: u64,
}

impl Zxid {
    pub const ZERO: Zxid = Zxid {
        epoch: 0,
        counter: 0,
    };

    pub const fn new(epoch: u64, counter: u64) -> Self {
        Zxid { epoch, counter }
    }
}

impl fmt::Display for Zxid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&format!("{}:{}", self.epoch, self.counter))
    }
}

/// Text that is not `epoch:counter`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("bad zxid {0:?}: expected epoch:counter, e.g. 3:17")]
pub struct ParseZxidError(String);

impl FromStr for Zxid {
    type Err = ParseZxidError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ParseZxidError(s.to_string());
        let (e, c) = s.split_once(':').ok_or_else(bad)?;
        Ok(Zxid::new(
            e.parse().map_err(|_| bad())?,
            c.parse().map_err(|_| bad())?,
        ))
    }
}

impl From<pb::Zxid> for Zxid {
    fn from(z: pb::Zxid) -> Self {
        Zxid::new(z.epoch, z.counter)
    }
}

/// A missing zxid is `0:0` (proto3 leaves an all-zero message out).
impl From<Option<pb::Zxid>> for Zxid {
    fn from(z: Option<pb::Zxid>) -> Self {
        z.map(Into::into).unwrap_or_default()
    }
}

impl From<guessgame_core::Zxid> for Zxid {
    fn from(z: guessgame_core::Zxid) -> Self {
        Zxid::new(z.epoch, z.counter)
    }
}

impl From<Zxid> for guessgame_core::Zxid {
    fn from(z: Zxid) -> Self {
        guessgame_core::Zxid::new(z.epoch, z.counter)
    }
}

impl Serialize for Zxid {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Zxid {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip_and_unknown_words_are_kept() {
        for w in ["leader", "follower", "looking", "unreachable", "observer"] {
            let r: Role = w.into();
            assert_eq!(r.as_str(), w);
            assert_eq!(r.to_string(), w);
            assert_eq!(serde_json::to_string(&r).unwrap(), format!("\"{w}\""));
            let back: Role = serde_json::from_str(&format!("\"{w}\"")).unwrap();
            assert_eq!(back, r);
        }
        assert_eq!(Role::from("observer"), Role::Other("observer".into()));
        assert_eq!(Role::from("leader".to_string()), Role::Leader);
        // Equality is by the word, however the value was made.
        assert_eq!(Role::Other("leader".into()), Role::Leader);
        assert_eq!(Membership::from("none"), Membership::NotMember);
        assert_eq!(Membership::NotMember.to_string(), "none");
        assert_eq!(Membership::from(MemberKind::Learner), Membership::Learner);
        assert!(MemberKind::Voter == "voter" && Role::Looking != "leader");
    }

    #[test]
    fn display_honours_width_as_the_strings_did() {
        assert_eq!(format!("[{:<11}]", Role::Follower), "[follower   ]");
        assert_eq!(format!("[{:<8}]", MemberKind::Voter), "[voter   ]");
        assert_eq!(format!("[{:>12}]", Zxid::new(3, 17)), "[        3:17]");
        assert_eq!(format!("[{:<6}]", Zxid::new(3, 17)), "[3:17  ]");
        assert_eq!(format!("{}", Zxid::new(12, 345)), "12:345");
    }

    #[test]
    fn zxids_parse_serialize_and_order_like_the_node() {
        let z: Zxid = "3:17".parse().unwrap();
        assert_eq!(z, Zxid::new(3, 17));
        assert_eq!(serde_json::to_string(&z).unwrap(), "\"3:17\"");
        assert_eq!(serde_json::from_str::<Zxid>("\"3:17\"").unwrap(), z);
        assert!(serde_json::from_str::<Zxid>("\"3-17\"").is_err());
        for bad in ["", "3", "3:", ":17", "a:1", "1:2:3"] {
            assert!(bad.parse::<Zxid>().is_err(), "{bad}");
        }
        assert!(Zxid::new(2, 99) < Zxid::new(3, 0));
        assert_eq!(Zxid::from(None::<pb::Zxid>), Zxid::ZERO);
        assert_eq!(Zxid::ZERO.to_string(), "0:0");
    }
}
