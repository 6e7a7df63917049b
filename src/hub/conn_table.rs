//! Which session each gateway connection of a core serves. A connection's
//! token ([`ConnId`]) carries its registry slot in its lower half and a
//! generation in its upper half, so the table is a vector indexed by slot:
//! 24 bytes per slot (the token and the session id), where a hash map
//! spent ~40 per connection with its load factor and control bytes.

use super::ConnId;
use crate::proto::cookie::SessionId;

/// See the module documentation. A slot whose token is 0 is empty (0 is
/// never a gateway connection's token).
#[derive(Debug, Default)]
pub(super) struct ConnTable {
    slots: Vec<(ConnId, SessionId)>,
    len: usize,
}

fn slot(conn: ConnId) -> usize {
    (conn & 0xffff_ffff) as usize
}

impl ConnTable {
    pub(super) fn get(&self, conn: &ConnId) -> Option<&SessionId> {
        match self.slots.get(slot(*conn)) {
            Some((c, session)) if *c == *conn && *conn != 0 => Some(session),
            _ => None,
        }
    }

    /// Records `conn` (its slot's previous connection, if any, is gone).
    pub(super) fn insert(&mut self, conn: ConnId, session: SessionId) {
        debug_assert_ne!(conn, 0, "0 is no connection's token");
        let i = slot(conn);
        if i >= self.slots.len() {
            // Grown by an eighth, not doubled: a crowd of 5,000 connections
            // leaves ~600 empty slots behind rather than ~3,000.
            let more = i + 1 - self.slots.len();
            if self.slots.capacity() < i + 1 {
                self.slots
                    .reserve_exact(more.max(self.slots.len() / 8).max(16));
            }
            self.slots.resize(i + 1, (0, session));
        }
        if self.slots[i].0 == 0 {
            self.len += 1;
        }
        self.slots[i] = (conn, session);
    }

    pub(super) fn remove(&mut self, conn: &ConnId) -> Option<SessionId> {
        let session = *self.get(conn)?;
        self.slots[slot(*conn)].0 = 0;
        self.len -= 1;
        Some(session)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.len
    }

    /// Gives back what a crowd of connections grew (slots past the last
    /// one in use), once at most a quarter of the slots are in use.
    pub(super) fn shrink_to_fit(&mut self) {
        if self.len * 4 > self.slots.len() {
            return;
        }
        let used = self
            .slots
            .iter()
            .rposition(|(c, _)| *c != 0)
            .map_or(0, |i| i + 1);
        self.slots.truncate(used);
        self.slots.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reused_slot_answers_only_to_its_new_token() {
        let mut t = ConnTable::default();
        let (a, b) = (SessionId::random(), SessionId::random());
        let old = (1u64 << 32) | 5;
        let new = (2u64 << 32) | 5;
        t.insert(old, a);
        assert_eq!(t.get(&old), Some(&a));
        assert_eq!(t.remove(&old), Some(a));
        assert_eq!(t.remove(&old), None);
        t.insert(new, b);
        assert_eq!(t.get(&old), None, "a stale token finds nothing");
        assert_eq!((t.get(&new), t.len()), (Some(&b), 1));
        assert_eq!(t.get(&0), None);
        assert_eq!(t.get(&((1u64 << 32) | 900)), None);
        t.insert(3, a);
        t.remove(&new);
        t.shrink_to_fit();
        assert_eq!((t.slots.len(), t.len()), (4, 1));
        t.remove(&3);
        t.shrink_to_fit();
        assert_eq!(t.slots.capacity(), 0);
    }
}
