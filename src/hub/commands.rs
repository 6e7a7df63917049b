//! What a client's commands (`sub`, `unsub`, `pub`, `who`) and the publish
//! API do: local bookkeeping, then mail to the topic's owner.

use std::sync::Arc;

use super::{text_frame, topic_owner, ConnId, Hub, Msg, Queued, Reply, Sub};
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
            queue.push(Queued::new(cmd, binary, now));
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
        let topic: Arc<str> = topic.into();
        let sub = Sub {
            last: 0,
            pending: true,
        };
        s.subs.insert(topic.clone(), sub);
        let peer = s.peer;
        let local = self.local_subs.entry(topic.clone()).or_default();
        local.push(session);
        let owner = topic_owner(&topic, self.cfg.cores);
        let from = self.cfg.core;
        let msg = Msg::Subscribe {
            topic,
            from,
            session,
            peer,
            after: None,
        };
        self.mail(owner, msg);
    }

    /// `unsub`: always answered `ok`; returns whether it was subscribed.
    fn unsubscribe(&mut self, conn: ConnId, session: SessionId, topic: &str) -> bool {
        let s = self.sessions.get_mut(&session).expect("conn has a session");
        let removed = s.subs.remove_entry(topic);
        let peer = s.peer;
        if let Some((topic, _)) = &removed {
            self.remove_local_sub(topic, session);
            let owner = topic_owner(topic, self.cfg.cores);
            let from = self.cfg.core;
            let msg = Msg::Unsubscribe {
                topic: topic.clone(),
                from,
                session,
                peer,
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
