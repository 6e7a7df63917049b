//! A topic's members: one entry per member session, by peer id, with its
//! user when authentication is on.
//!
//! A broadcast topic may have every session of a node, so an entry should
//! be small. Without authentication no member has a user, and the table is a
//! set of peer ids: 8 bytes a bucket (9 with hashbrown's control byte), where
//! a map to `Option<Arc<str>>` takes 24 (25): for 5,000 members (8,192
//! buckets) ~74 KB instead of ~205 KB. The first member with a user turns
//! it into that map, and an emptied one starts over as a set.

use std::collections::HashSet;
use std::sync::Arc;

use crate::proto::peer::PeerId;
use crate::sys::hash::{IdHash, IdMap};

/// See the module documentation.
#[derive(Debug)]
pub(super) enum Members {
    /// No member has a user.
    Anonymous(HashSet<PeerId, IdHash>),
    /// Some member has a user (authentication is on).
    Named(IdMap<PeerId, Option<Arc<str>>>),
}

impl Default for Members {
    fn default() -> Members {
        Members::Anonymous(HashSet::default())
    }
}

impl Members {
    /// Adds `peer` (or gives it `user`); whether it is new.
    pub(super) fn insert(&mut self, peer: PeerId, user: Option<Arc<str>>) -> bool {
        if let (Members::Anonymous(set), Some(_)) = (&*self, &user) {
            let named = set.iter().map(|p| (*p, None)).collect();
            *self = Members::Named(named);
        }
        match self {
            Members::Anonymous(set) => set.insert(peer),
            Members::Named(map) => map.insert(peer, user).is_none(),
        }
    }

    /// Removes `peer`; whether it was a member.
    pub(super) fn remove(&mut self, peer: &PeerId) -> bool {
        let was = match self {
            Members::Anonymous(set) => set.remove(peer),
            Members::Named(map) => map.remove(peer).is_some(),
        };
        if was && self.is_empty() {
            *self = Members::default();
        }
        was
    }

    pub(super) fn len(&self) -> usize {
        match self {
            Members::Anonymous(set) => set.len(),
            Members::Named(map) => map.len(),
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every member: its peer id and user.
    pub(super) fn iter(&self) -> Box<dyn Iterator<Item = (PeerId, Option<&Arc<str>>)> + '_> {
        match self {
            Members::Anonymous(set) => Box::new(set.iter().map(|p| (*p, None))),
            Members::Named(map) => Box::new(map.iter().map(|(p, u)| (*p, u.as_ref()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_until_a_member_has_a_user() {
        let mut m = Members::default();
        let (a, b) = (PeerId::random(), PeerId::random());
        assert!(m.insert(a, None));
        assert!(!m.insert(a, None), "already a member");
        assert!(matches!(m, Members::Anonymous(_)));
        assert!(m.insert(b, Some("ann".into())));
        assert!(matches!(m, Members::Named(_)));
        let mut all: Vec<_> = m.iter().map(|(p, u)| (p, u.cloned())).collect();
        all.sort_by_key(|(p, _)| *p);
        let mut want = vec![(a, None), (b, Some(Arc::<str>::from("ann")))];
        want.sort_by_key(|(p, _)| *p);
        assert_eq!(all, want);
        assert_eq!(m.len(), 2);
        assert!(m.remove(&a) && m.remove(&b));
        assert!(!m.remove(&b), "no longer a member");
        assert!(m.is_empty());
        assert!(matches!(m, Members::Anonymous(_)), "emptied: a set again");
    }
}
