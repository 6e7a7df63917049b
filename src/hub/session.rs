//! A session's life on its core: attach (new, resumed, taken over),
//! `hello`, detach, expiry after `--session-ttl`, and its end.

use std::cmp::Reverse;
use std::num::NonZeroU64;
use std::sync::Arc;

use super::{
    conn_token, text_frame, topic_owner, ConnId, EngineOp, Hub, Identity, Msg, Output, Session,
    Wait, CHECKPOINT_MS,
};
use crate::auth::Action;
use crate::proto::close::ServerClose;
use crate::proto::command;
use crate::proto::cookie::SessionId;

impl Hub {
    /// Whether a connection of `user` may have `session`: `None` when it may
    /// (this core does not hold it, or holds it for the same user); else the
    /// new session id the connection gets instead, because the cookie named
    /// another user's session (counted; that session is untouched).
    pub fn bind_user(&mut self, session: SessionId, user: Option<&str>) -> Option<SessionId> {
        let s = self.sessions.get(&session)?;
        if s.user.as_deref() == user {
            return None;
        }
        self.stats.auth_mismatches += 1;
        Some(self.fresh_session_id())
    }

    /// A new session id owned by this core.
    fn fresh_session_id(&self) -> SessionId {
        SessionId::random_owned_by(self.cfg.core, self.cfg.cores)
    }

    /// A connection for `session` (owned by this core, of the user `who`,
    /// already checked with [`Hub::bind_user`]) is open; its 101 waits for
    /// [`Output::Accept`]. Takes over an older connection of the same
    /// session. Without an engine, or for a request without the cookie,
    /// accepts and sends `hello` at once and asks the topic owners to replay
    /// what was missed; with one, claims the session from the engine first
    /// (another node may have had it; with auth on, the 101 waits for the
    /// claim, since the engine's session may be another user's). Returns
    /// whether this core already held the session (a sticky hit).
    pub fn attach(
        &mut self,
        conn: ConnId,
        session: SessionId,
        cookie_present: bool,
        who: Option<Identity>,
        now: u64,
    ) -> bool {
        self.clock = self.clock.max(now);
        let had = match self.sessions.get_mut(&session) {
            Some(s) => {
                if let Some(old) = s.conn.replace(conn_token(conn)).map(NonZeroU64::get) {
                    // The old socket still looks open: this reconnect replaces it.
                    self.conns.remove(&old);
                    self.out.push_back(Output::Close {
                        conn: old,
                        why: ServerClose::Replaced,
                    });
                }
                s.disconnected_at = None;
                s.expiring = false;
                if let Some(who) = who {
                    // The new token's patterns (checked on `hello`).
                    s.grants = who.grants;
                }
                true
            }
            None => {
                self.sessions
                    .insert(session, Box::new(Session::new(Some(conn), who)));
                false
            }
        };
        self.conns.insert(conn, session);
        if self.cfg.engine && cookie_present {
            let s = self.sessions.get_mut(&session).expect("attached");
            s.loading = Some(Box::default());
            s.placeholder = !had;
            let user = s.user.clone();
            if self.cfg.policy.is_none() {
                self.out.push_back(Output::Accept { conn, session });
            }
            let op = EngineOp::Claim { session, user };
            self.ask(Wait::Claim { session, conn, had }, op);
        } else {
            self.out.push_back(Output::Accept { conn, session });
            self.greet(conn, session, had, now);
        }
        self.run_local();
        had
    }

    /// The engine holds `session` for another user (or cannot say whose it
    /// is): the connection waiting for its claim gets a new session instead
    /// (the engine's is untouched).
    pub(super) fn rebind(&mut self, old: SessionId, conn: ConnId, now: u64) {
        let Some(mut s) = self.sessions.remove(&old) else {
            return;
        };
        let fresh = self.fresh_session_id();
        // It held nothing yet (a placeholder for the claim): a new session;
        // the commands that waited for the claim run after its `hello`.
        s.placeholder = false;
        self.sessions.insert(fresh, s);
        self.conns.insert(conn, fresh);
        self.out.push_back(Output::Accept {
            conn,
            session: fresh,
        });
        self.greet(conn, fresh, false, now);
    }

    /// Sends `hello` and, for a resumed session, asks each topic owner for
    /// what was missed; then runs the commands that waited for it.
    pub(super) fn greet(&mut self, conn: ConnId, session: SessionId, resumed: bool, now: u64) {
        let s = self.sessions.get_mut(&session).expect("attached");
        let (peer, node) = (s.peer, &self.cfg.node_id);
        let user = s.user.as_deref();
        let hello = text_frame(|l| command::write_hello(l, &peer.to_string(), resumed, node, user));
        let user = self.cfg.events.then(|| s.user.clone());
        self.send(conn, hello);
        if let Some(user) = user {
            self.out.push_back(Output::Connected {
                session,
                peer,
                user,
                resumed,
            });
        }
        let from = self.cfg.core;
        if resumed {
            // The new token may allow less than the one the session began with.
            self.revoke_disallowed(conn, session);
        }
        let s = self.sessions.get_mut(&session).expect("attached");
        let queued = s.loading.take().map(|q| *q).unwrap_or_default();
        if resumed {
            self.stats.sessions_resumed += 1;
            let member = s.member();
            let mut asks = Vec::with_capacity(s.subs.len());
            for (topic, sub) in s.subs.iter_mut() {
                sub.pending = true;
                asks.push((topic.clone(), sub.last));
            }
            for (topic, last) in asks {
                let owner = topic_owner(&topic, self.cfg.cores);
                self.mail(
                    owner,
                    Msg::Subscribe {
                        topic,
                        from,
                        session,
                        member: member.clone(),
                        after: Some(last),
                    },
                );
            }
        } else {
            self.stats.sessions_new += 1;
        }
        // Direct messages it missed follow the topics' replay.
        self.resume_directs(session, conn);
        if self.cfg.engine {
            // Persisted from the first moment, so any node can resume it.
            self.save(session, None, now);
        }
        for q in queued {
            self.run_queued(conn, q);
        }
    }

    /// The connection's socket is gone. A close with 1000 ends the session at
    /// once; anything else keeps it for `--session-ttl`.
    /// `lost` lists, per topic, the first message that never reached the client.
    pub fn detach(
        &mut self,
        conn: ConnId,
        now: u64,
        ended_by_client: bool,
        lost: &[(Arc<str>, u64)],
    ) {
        self.clock = self.clock.max(now);
        let Some(session) = self.conns.remove(&conn) else {
            return;
        };
        self.rewind(session, lost);
        if ended_by_client {
            if self.cfg.engine {
                self.ask(Wait::Forget, EngineOp::End(session));
            }
            self.end_session(session, true);
        } else if self.sessions.contains_key(&session) {
            self.mark_disconnected(session, now);
            let s = self.sessions.get_mut(&session).expect("checked");
            // Gone before its claim was answered: what we hold is not the
            // session's state, so the engine's copy stays as it is, and a
            // placeholder made for the claim is dropped.
            let claimed = s.loading.take().is_none();
            if claimed {
                if self.cfg.engine {
                    self.save(session, None, now);
                }
            } else if s.placeholder {
                self.sessions.remove(&session);
            }
        }
        self.run_local();
    }

    /// Expires sessions disconnected for longer than the TTL and topics
    /// without members for longer than `--topic-ttl`, and with an engine,
    /// checkpoints what changed (at most once a second).
    pub fn tick(&mut self, now: u64) {
        self.clock = self.clock.max(now);
        let ttl = self.cfg.session_ttl_ms;
        while let Some(&Reverse((due, id))) = self.expiries.peek() {
            if due > now {
                break;
            }
            self.expiries.pop();
            // A session that came back (or left again later, with a later
            // entry of its own) is not due.
            let due_now = self.sessions.get(&id).is_some_and(|s| {
                !s.expiring
                    && s.disconnected_at
                        .is_some_and(|t| now.saturating_sub(t.get() - 1) >= ttl)
            });
            if !due_now {
                continue;
            }
            if self.cfg.engine && self.engine_up {
                // Another node may have resumed it meanwhile: only the
                // engine's owner announces the `leave`.
                self.sessions.get_mut(&id).expect("listed").expiring = true;
                self.ask(Wait::Expire(id), EngineOp::End(id));
            } else {
                self.end_session(id, true);
            }
        }
        self.expire_topics(now);
        // Tables a crowd of sessions grew are given back once it is gone.
        if self.sessions.capacity() > 64 && self.sessions.len() < self.sessions.capacity() / 4 {
            self.sessions.shrink_to_fit();
            self.conns.shrink_to_fit();
        }
        if self.cfg.engine && now.saturating_sub(self.last_checkpoint) >= CHECKPOINT_MS {
            self.last_checkpoint = now;
            self.checkpoint(now);
        }
        self.run_local();
    }

    /// When [`Hub::tick`] has work next (ms): the earliest session or topic
    /// expiry, and with an engine the next checkpoint. `None`: nothing is due.
    pub fn poll_timeout(&self) -> Option<u64> {
        let sessions = self.expiries.peek().map(|Reverse((due, _))| *due);
        let topics = self.next_topic_expiry();
        let expiry = match (sessions, topics) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let checkpoint = self
            .cfg
            .engine
            .then(|| self.last_checkpoint + CHECKPOINT_MS);
        match (expiry, checkpoint) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The session's socket is gone: it waits for a resume until its TTL
    /// runs out (an entry in the expiry queue says when to look).
    pub(super) fn mark_disconnected(&mut self, session: SessionId, now: u64) {
        if let Some(s) = self.sessions.get_mut(&session) {
            s.conn = None;
            s.disconnected_at = NonZeroU64::new(now.saturating_add(1));
            let due = now + self.cfg.session_ttl_ms;
            self.expiries.push(Reverse((due, session)));
        }
    }

    /// Ends a session here; `announce` sends `leave` to its topics' members.
    pub(super) fn end_session(&mut self, session: SessionId, announce: bool) {
        let Some(s) = self.sessions.remove(&session) else {
            return;
        };
        if let Some(conn) = s.conn() {
            self.conns.remove(&conn);
        }
        self.directs.remove(&session);
        self.stats.sessions_ended += 1;
        let from = self.cfg.core;
        let member = s.member();
        for topic in s.subs.into_keys() {
            self.remove_local_sub(&topic, session);
            let owner = topic_owner(&topic, self.cfg.cores);
            self.mail(
                owner,
                Msg::Unsubscribe {
                    topic,
                    from,
                    member: member.clone(),
                    announce,
                },
            );
        }
    }

    /// A fresh token for the open connection `conn` (`auth <jwt>`, already
    /// verified): the same user replaces the session's patterns, answers
    /// `ok auth <exp>`, and drops the subscriptions the new patterns no
    /// longer allow (`err 403 sub <topic> revoked`). Another user, or a
    /// session still waiting for its claim, answers `err 401 auth invalid`
    /// and changes nothing. Returns whether the token was taken.
    pub fn refresh(&mut self, conn: ConnId, who: Identity, exp: u64, now: u64) -> bool {
        self.clock = self.clock.max(now);
        let Some(&session) = self.conns.get(&conn) else {
            return false;
        };
        let s = self.sessions.get_mut(&session).expect("conn has a session");
        if s.loading.is_some() || s.user.as_deref() != Some(&*who.user) {
            self.send(conn, text_frame(command::write_auth_invalid));
            return false;
        }
        s.grants = who.grants;
        self.send(conn, text_frame(|l| command::write_ok_auth(l, exp)));
        if self.revoke_disallowed(conn, session) && self.cfg.engine {
            self.save(session, None, now);
        }
        self.run_local();
        true
    }

    /// Drops the subscriptions the session's patterns no longer allow, each
    /// with `err 403 sub <topic> revoked`; returns whether any was dropped.
    fn revoke_disallowed(&mut self, conn: ConnId, session: SessionId) -> bool {
        let Some(policy) = self.cfg.policy.clone() else {
            return false;
        };
        let s = self.sessions.get_mut(&session).expect("conn has a session");
        let user = s.user.as_deref().unwrap_or("");
        let grants = s.grants.as_deref();
        let mut gone: Vec<Arc<str>> = (s.subs.keys())
            .filter(|t| !policy.allows(grants, Action::Subscribe, t.as_bytes(), user))
            .cloned()
            .collect();
        gone.sort();
        let member = s.member();
        for topic in &gone {
            s.subs.remove(topic);
        }
        let from = self.cfg.core;
        for topic in &gone {
            self.remove_local_sub(topic, session);
            let owner = topic_owner(topic, self.cfg.cores);
            let msg = Msg::Unsubscribe {
                topic: topic.clone(),
                from,
                member: member.clone(),
                announce: true,
            };
            self.mail(owner, msg);
            self.send(conn, text_frame(|l| command::write_revoked(l, topic)));
        }
        !gone.is_empty()
    }

    pub(super) fn remove_local_sub(&mut self, topic: &Arc<str>, session: SessionId) {
        if let Some(list) = self.local_subs.get_mut(topic) {
            list.retain(|s| *s != session);
            if list.is_empty() {
                self.local_subs.remove(topic);
            }
        }
    }
}
