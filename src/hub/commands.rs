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
        let subs_before = self.sessions.get(&session).map_or(0, |s| s.subs.len());
        match cmd {
            Command::Sub(topic) => {
                let s = self.sessions.get_mut(&session).expect("conn has a session");
                if s.subs.contains_key(topic) {
                    let topic: Arc<str> = topic.into();
                    let last = s.subs[&topic].last;
                    self.send(
                        conn,
                        text_frame(|l| command::write_ok(l, "sub", &topic, Some(last))),
                    );
                    return;
                }
                let topic: Arc<str> = topic.into();
                s.subs.insert(
                    topic.clone(),
                    Sub {
                        last: 0,
                        pending: true,
                    },
                );
                self.local_subs
                    .entry(topic.clone())
                    .or_default()
                    .push(session);
                let owner = topic_owner(&topic, self.cfg.cores);
                self.mail(
                    owner,
                    Msg::Subscribe {
                        topic,
                        from,
                        session,
                        after: None,
                    },
                );
            }
            Command::Unsub(topic) => {
                let s = self.sessions.get_mut(&session).expect("conn has a session");
                if let Some((topic, _)) = s.subs.remove_entry(topic) {
                    self.remove_local_sub(&topic, session);
                    let owner = topic_owner(&topic, self.cfg.cores);
                    self.mail(
                        owner,
                        Msg::Unsubscribe {
                            topic: topic.clone(),
                            from,
                            session,
                            announce: true,
                        },
                    );
                }
                self.send(
                    conn,
                    text_frame(|l| command::write_ok(l, "unsub", topic, None)),
                );
            }
            Command::Pub { topic, payload } => {
                let topic: Arc<str> = topic.into();
                let owner = topic_owner(&topic, self.cfg.cores);
                let reply = Reply::Session(from, session);
                self.mail(
                    owner,
                    Msg::Publish {
                        topic,
                        payload: payload.into(),
                        binary,
                        reply,
                    },
                );
            }
            Command::Who(topic) => {
                let owner = topic_owner(topic, self.cfg.cores);
                self.mail(
                    owner,
                    Msg::Who {
                        topic: topic.into(),
                        from,
                        session,
                    },
                );
            }
        }
        let subs_after = self.sessions.get(&session).map_or(0, |s| s.subs.len());
        if self.cfg.engine && subs_after < subs_before {
            // Subscriptions are written through (a new one when the owner
            // has numbered it: see `on_subscribed`).
            self.save(session, None, now);
        }
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
