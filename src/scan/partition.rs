//! Splitting the user set into partitions that cover every user exactly
//! once, so they can be paged concurrently (and by several instances).
//!
//! A UPN is `local@domain`; the local part uses only `A–Z a–z 0–9 ' . - _ !
//! # ^ ~` and cannot start with a period (FACTS). `startswith` is
//! case-insensitive. So:
//! - the roots `startswith(userPrincipalName, c)` for every legal first
//!   character `c` (letters once, case folded) are disjoint and cover all;
//! - a prefix `p` splits into `p + c` for every character that can follow:
//!   the legal characters, the period, and `@` (where the local part ends).
//!   Every UPN starting with `p` is longer than `p` (it still needs `@…`),
//!   so exactly one child holds it.
//!
//! B2C supports `startswith` (not `ne`/`not`/`endsWith`), so the same plan
//! works on both tenant kinds.

use serde::{Deserialize, Serialize};

/// Characters a UPN may start with, case folded.
pub const FIRST_CHARS: &str = "abcdefghijklmnopqrstuvwxyz0123456789'-_!#^~";
/// Characters that may follow inside the local part, and `@` which ends it.
pub const NEXT_CHARS: &str = "abcdefghijklmnopqrstuvwxyz0123456789'-_!#^~.@";

/// Deepest prefix worth splitting to; past it a partition is paged whole.
pub const MAX_DEPTH: usize = 3;

/// One partition: the users whose UPN starts with `prefix` (case-insensitive).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Partition {
    pub prefix: String,
}

impl Partition {
    pub fn roots() -> Vec<Partition> {
        FIRST_CHARS
            .chars()
            .map(|c| Partition {
                prefix: c.to_string(),
            })
            .collect()
    }

    /// Whether splitting can still make it smaller: not past `MAX_DEPTH`,
    /// and not past the `@` (all users of a domain share what follows).
    pub fn can_split(&self) -> bool {
        self.prefix.chars().count() < MAX_DEPTH && !self.prefix.contains('@')
    }

    pub fn children(&self) -> Vec<Partition> {
        NEXT_CHARS
            .chars()
            .map(|c| Partition {
                prefix: format!("{}{c}", self.prefix),
            })
            .collect()
    }

    /// The OData filter: `startswith(userPrincipalName,'…')`, with `'`
    /// doubled as OData string literals require.
    pub fn filter(&self) -> String {
        format!(
            "startswith(userPrincipalName,'{}')",
            self.prefix.replace('\'', "''")
        )
    }

    /// Whether `upn` belongs here (the same rule Graph applies).
    pub fn contains(&self, upn: &str) -> bool {
        upn.len() >= self.prefix.len()
            && upn
                .get(..self.prefix.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(&self.prefix))
    }

    /// A name usable in blob paths and block ids: the prefix hex-encoded.
    pub fn key(&self) -> String {
        hex::encode(self.prefix.as_bytes())
    }

    /// The partition a [`key`](Self::key) names, if it is one the plan can
    /// produce (a root, or a child of a splittable partition). Keys arrive
    /// in queue messages: anything else is refused, not scanned.
    pub fn from_key(key: &str) -> Option<Partition> {
        let bytes = hex::decode(key).ok()?;
        let prefix = String::from_utf8(bytes).ok()?;
        let mut chars = prefix.chars();
        let first = chars.next()?;
        if !FIRST_CHARS.contains(first) || prefix.chars().count() > MAX_DEPTH {
            return None;
        }
        let mut parent = Partition {
            prefix: first.to_string(),
        };
        for c in chars {
            if !parent.can_split() || !NEXT_CHARS.contains(c) {
                return None;
            }
            parent.prefix.push(c);
        }
        Some(parent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every legal UPN shape we can think of lands in exactly one root and,
    /// at every depth, in exactly one child.
    #[test]
    fn partitions_cover_every_upn_exactly_once() {
        let upns = [
            "a@contoso.com",
            "A.b@contoso.com",
            "o'neil@contoso.com",
            "~tilde@contoso.com",
            "#hash.x@contoso.com",
            "^caret@contoso.com",
            "!bang@contoso.com",
            "_under@contoso.com",
            "-dash@contoso.com",
            "0f9e8d7c-6b5a-4a3b-9c2d-1e0f9a8b7c6d@tenant.onmicrosoft.com",
            "zz@contoso.com",
            "x@y.z",
            "ab.cd.ef@contoso.com",
            "jane_doe#EXT#@contoso.onmicrosoft.com",
        ];
        for upn in upns {
            let mut level = Partition::roots();
            loop {
                let holders: Vec<_> = level.iter().filter(|p| p.contains(upn)).cloned().collect();
                assert_eq!(holders.len(), 1, "{upn} in {holders:?}");
                let p = &holders[0];
                if !p.can_split() {
                    break;
                }
                level = p.children();
            }
        }
    }

    #[test]
    fn roots_do_not_include_a_period_and_fold_case() {
        assert!(!FIRST_CHARS.contains('.'));
        assert!(!FIRST_CHARS.chars().any(|c| c.is_ascii_uppercase()));
        assert_eq!(Partition::roots().len(), FIRST_CHARS.len());
    }

    #[test]
    fn keys_round_trip_and_only_planned_partitions_parse() {
        for p in Partition::roots()
            .into_iter()
            .chain(Partition { prefix: "o".into() }.children())
            .chain(
                Partition {
                    prefix: "o'".into(),
                }
                .children(),
            )
        {
            assert_eq!(Partition::from_key(&p.key()), Some(p));
        }
        for bad in [
            "",
            "zz",
            &hex::encode("."),
            &hex::encode("A"),
            &hex::encode("abcd"),
            &hex::encode("a@b"),
            &hex::encode("a b"),
        ] {
            assert_eq!(Partition::from_key(bad), None, "{bad}");
        }
    }

    #[test]
    fn filters_escape_quotes() {
        let p = Partition {
            prefix: "o'".into(),
        };
        assert_eq!(p.filter(), "startswith(userPrincipalName,'o''')");
    }

    #[test]
    fn splitting_stops_at_the_at_sign_and_the_depth_limit() {
        assert!(
            !Partition {
                prefix: "a@".into()
            }
            .can_split()
        );
        assert!(
            !Partition {
                prefix: "abc".into()
            }
            .can_split()
        );
        assert!(
            Partition {
                prefix: "ab".into()
            }
            .can_split()
        );
        assert_eq!(
            Partition { prefix: "a".into() }.children().len(),
            NEXT_CHARS.len()
        );
    }
}
