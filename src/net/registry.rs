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
}

impl Registry {
    /// Registers a connection on socket `fd` (the record owns it from now
    /// on), seen at coarse time `now`; `conn_id` is the hub's token of a
    /// gateway connection. The reactor's registration must follow.
    pub fn register(&self, fd: RawFd, now: u64, conn_id: Option<ConnId>) -> Rc<Conn> {
        let mut slots = self.slots.borrow_mut();
        let slot = match self.free.borrow_mut().pop() {
            Some(slot) => slot,
            None => {
                slots.push(None);
                (slots.len() - 1) as u32
            }
        };
        let conn = Rc::new(Conn::new(fd, slot, now, conn_id));
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
