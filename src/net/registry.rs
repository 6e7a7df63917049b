//! Where an open connection is known to its core: the per-core registry that
//! the heartbeat sweep, the drain and the reactor walk. A slot number is the
//! reactor's token for the connection.

use std::cell::{Cell, RefCell};
use std::os::fd::RawFd;
use std::rc::Rc;

use super::conn::Conn;
use crate::hub::ConnId;

/// One core's open WebSocket connections.
#[derive(Default)]
pub struct Registry {
    slots: RefCell<Vec<Option<Rc<Conn>>>>,
    free: RefCell<Vec<u32>>,
    len: Cell<usize>,
    /// Gateway connections registered so far: the upper half of their
    /// [`ConnId`] (the lower half is the slot), so a reused slot never
    /// answers to an old id.
    generation: Cell<u32>,
}

impl Registry {
    /// Registers a connection on socket `fd` (the record owns it from now
    /// on), seen at coarse time `now`; a gateway connection gets the hub's
    /// token ([`Conn::conn_id`]): its generation and its slot, so finding
    /// it again is an index, not a lookup. The reactor's registration must
    /// follow.
    pub fn register(&self, fd: RawFd, now: u64, gateway: bool) -> Rc<Conn> {
        let mut slots = self.slots.borrow_mut();
        let slot = match self.free.borrow_mut().pop() {
            Some(slot) => slot,
            None => {
                // Grown by an eighth, not doubled: a crowd of 5,000
                // connections leaves ~600 empty slots behind, not ~3,000.
                let len = slots.len();
                if len == slots.capacity() {
                    slots.reserve_exact((len / 8).max(16));
                }
                slots.push(None);
                (slots.len() - 1) as u32
            }
        };
        let generation = if gateway {
            let generation = self.generation.get().wrapping_add(1).max(1);
            self.generation.set(generation);
            generation
        } else {
            0
        };
        let conn = Rc::new(Conn::new(fd, slot, now, generation));
        slots[slot as usize] = Some(conn.clone());
        self.len.set(self.len.get() + 1);
        conn
    }

    /// Removes a connection (its task is ending).
    pub fn remove(&self, conn: &Conn) {
        let mut slots = self.slots.borrow_mut();
        let slot = &mut slots[conn.slot() as usize];
        if slot.as_deref().is_some_and(|c| std::ptr::eq(c, conn)) {
            *slot = None;
            self.free.borrow_mut().push(conn.slot());
            self.len.set(self.len.get() - 1);
        }
    }

    /// The connection in `slot`, if any.
    pub fn get(&self, slot: u32) -> Option<Rc<Conn>> {
        self.slots.borrow().get(slot as usize)?.clone()
    }

    /// Runs `f` on the gateway connection the hub knows as `id`, if it is
    /// still attached (see [`Conn::detach_id`]).
    pub fn with_gateway<R>(&self, id: ConnId, f: impl FnOnce(&Rc<Conn>) -> R) -> Option<R> {
        let slots = self.slots.borrow();
        let conn = slots.get(id as u32 as usize)?.as_ref()?;
        (conn.conn_id() == Some(id)).then(|| f(conn))
    }

    /// Open connections.
    pub fn len(&self) -> usize {
        self.len.get()
    }

    /// Whether no connection is open.
    pub fn is_empty(&self) -> bool {
        self.len.get() == 0
    }

    /// Calls `f` on every open connection.
    pub fn for_each(&self, mut f: impl FnMut(&Conn)) {
        for conn in self.slots.borrow().iter().flatten() {
            f(conn);
        }
    }

    /// The open connections right now (for work spread over time).
    pub fn snapshot(&self) -> Vec<Rc<Conn>> {
        self.slots.borrow().iter().flatten().cloned().collect()
    }
}
