//! What a client's commands (`sub`, `unsub`, `pub`, `who`) and the publish
//! API do: local bookkeeping, then mail to the topic's owner.

use std::sync::Arc;

use super::{text_frame, topic_owner, ConnId, Hub, Msg, Queued, Reply, Sub};
use crate::auth::Action;
use crate::proto::command::{self, Command};
use crate::proto::cookie::SessionId;

impl Hub {
    /// A command from a connection of this core.
    pub fn command(&mut self, conn: ConnId, cmd: Command<'_>, binary: bool, now: u64) {
        self.clock = self.clock.max(now);
        let Some(&session) = self.conns.get(&conn) else {
            return;
        };
        if let Some(queue) = self
            .sessions
            .get_mut(&session)
            .and_then(|s| s.loading.as_mut())
        {
            // `hello` has not gone out yet: keep the command for after it.
            if let Some(q) = Queued::new(cmd, binary, now) {
                queue.push(q);
            }
            return;
        }
        self.run_command(conn, session, cmd, binary, now);
        self.run_local();
    }

    pub(super) fn run_queued(&mut self, conn: ConnId, q: Queued) {
        let Some(&session) = self.conns.get(&conn) else {
            return;
        };
        let (cmd, binary, now) = q.command();
        self.run_command(conn, session, cmd, binary, now);
    }

    fn run_command(
        &mut self,
        conn: ConnId,
        session: SessionId,
        cmd: Command<'_>,
        binary: bool,
        now: u64,
    ) {
        if !self.allowed(session, &cmd) {
            let topic = match cmd {
                Command::Sub(t) | Command::Who(t) | Command::Pub { topic: t, .. } => t,
                Command::Unsub(_) | Command::Auth(_) | Command::Send(_) => return,
            };
            let frame = text_frame(|l| command::write_forbidden(l, cmd.name(), topic));
            self.send(conn, frame);
            return;
        }
        let from = self.cfg.core;
        match cmd {
            Command::Sub(topic) => self.subscribe(conn, session, topic),
            Command::Unsub(topic) => {
                if self.unsubscribe(conn, session, topic) && self.cfg.engine {
                    // Subscriptions are written through (a new one when the
                    // owner has numbered it: see `on_subscribed`).
                    self.save(session, None, now);
                }
            }
            Command::Pub { topic, payload } => {
                let topic: Arc<str> = topic.into();
                let owner = topic_owner(&topic, self.cfg.cores);
                let payload = payload.into();
                let reply = Reply::Session(from, session);
                let msg = Msg::Publish {
                    topic,
                    payload,
                    binary,
                    reply,
                };
                self.mail(owner, msg);
            }
            // Refreshed by the I/O layer, which holds the verifier; `send`
            // goes to the events hook from the I/O layer too.
            Command::Auth(_) | Command::Send(_) => {}
            Command::Who(topic) => {
                let owner = topic_owner(topic, self.cfg.cores);
                let topic = topic.into();
                self.mail(
                    owner,
                    Msg::Who {
                        topic,
                        from,
                        session,
                    },
                );
            }
        }
    }

    /// Whether the session's user may run `cmd` (DESIGN §11): `sub` and
    /// `who` need a subscribe pattern, `pub` a publish pattern, from the
    /// flags or the session's token; `unsub` is always allowed. Auth off:
    /// everything is.
    fn allowed(&self, session: SessionId, cmd: &Command<'_>) -> bool {
        let Some(policy) = &self.cfg.policy else {
            return true;
        };
        let (action, topic) = match *cmd {
            Command::Sub(t) => (Action::Subscribe, t),
            Command::Who(t) => (Action::Who, t),
            Command::Pub { topic, .. } => (Action::Publish, topic),
            Command::Unsub(_) | Command::Auth(_) | Command::Send(_) => return true,
        };
        let Some(s) = self.sessions.get(&session) else {
            return false;
        };
        let user = s.user.as_deref().unwrap_or("");
        policy.allows(s.grants.as_deref(), action, topic.as_bytes(), user)
    }

    /// `sub`: already subscribed answers `ok` at once; otherwise the topic's
    /// owner numbers the subscription (its `Subscribed` sends the `ok`).
    fn subscribe(&mut self, conn: ConnId, session: SessionId, topic: &str) {
        let s = self.sessions.get_mut(&session).expect("conn has a session");
        if let Some((topic, sub)) = s.subs.get_key_value(topic) {
            let (topic, last) = (topic.clone(), sub.last);
            let frame = text_frame(|l| command::write_ok(l, "sub", &topic, Some(last)));
            self.send(conn, frame);
            return;
        }
        // One copy of the name per core, shared by its subscribers (the
        // fan-out compares it per subscriber: one cache line, not 5,000).
        let topic = match self.local_subs.get_key_value(topic) {
            Some((name, _)) => name.clone(),
            None => Arc::from(topic),
        };
        let s = self.sessions.get_mut(&session).expect("conn has a session");
        let sub = Sub {
            last: 0,
            pending: true,
        };
        s.subs.insert(topic.clone(), sub);
        let member = s.member();
        let local = self.local_subs.entry(topic.clone()).or_default();
        if local.len() == local.capacity() {
            // An eighth more, not double: a topic's list of a crowd is one
            // entry per subscriber plus little.
            local.reserve_exact((local.len() / 8).max(4));
        }
        local.push(session);
        let owner = topic_owner(&topic, self.cfg.cores);
        let from = self.cfg.core;
        let msg = Msg::Subscribe {
            topic,
            from,
            session,
            member,
            after: None,
        };
        self.mail(owner, msg);
    }

    /// `unsub`: always answered `ok`; returns whether it was subscribed.
    fn unsubscribe(&mut self, conn: ConnId, session: SessionId, topic: &str) -> bool {
        let s = self.sessions.get_mut(&session).expect("conn has a session");
        let removed = s.subs.remove_entry(topic);
        let member = s.member();
        if let Some((topic, _)) = &removed {
            self.remove_local_sub(topic, session);
            let owner = topic_owner(topic, self.cfg.cores);
            let from = self.cfg.core;
            let msg = Msg::Unsubscribe {
                topic: topic.clone(),
                from,
                member,
                announce: true,
            };
            self.mail(owner, msg);
        }
        let frame = text_frame(|l| command::write_ok(l, "unsub", topic, None));
        self.send(conn, frame);
        removed.is_some()
    }

    /// A publish from the admin API (on this core).
    pub fn publish_api(&mut self, request: u64, topic: &str, payload: &[u8], binary: bool) {
        let owner = topic_owner(topic, self.cfg.cores);
        let reply = Reply::Admin(self.cfg.core, request);
        self.mail(
            owner,
            Msg::Publish {
                topic: topic.into(),
                payload: payload.into(),
                binary,
                reply,
            },
        );
        self.run_local();
    }
}
