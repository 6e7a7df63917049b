//! A session's subscriptions: topic name → [`Sub`].
//!
//! Most sessions hold one topic or a few, and a fan-out looks the topic up
//! in every subscriber's set for every message. A hash map costs a table of
//! at least four buckets (~150 bytes on the heap for one topic) and a hash
//! of the name per lookup; a short vector costs one entry (32 bytes, 48
//! with malloc's header) and a pointer comparison, since the hub shares one
//! copy of each name per core. One topic, the usual case, is kept inline
//! in the session (no allocation at all, and nothing left between the
//! buffers of a subscribe storm to fragment the heap). Past [`FEW`] topics
//! the set becomes a hash map, so a session with thousands of topics still
//! finds one in constant time.

use std::collections::hash_map;
use std::sync::Arc;

use super::Sub;
use crate::sys::hash::IdMap;

/// The most topics kept in the vector form.
const FEW: usize = 8;

/// See the module documentation.
#[derive(Debug)]
pub(super) enum Subs {
    /// Exactly one topic.
    One(Arc<str>, Sub),
    /// Searched in order; its capacity is its length (grown one at a time).
    Few(Vec<(Arc<str>, Sub)>),
    Many(Box<IdMap<Arc<str>, Sub>>),
}

impl Default for Subs {
    fn default() -> Subs {
        Subs::Few(Vec::new())
    }
}

/// Whether `key` names `topic`: the same shared copy (the usual case), or
/// an equal name.
#[inline]
fn names(key: &Arc<str>, topic: &str) -> bool {
    std::ptr::eq(Arc::as_ptr(key), topic) || **key == *topic
}

impl Subs {
    pub(super) fn len(&self) -> usize {
        match self {
            Subs::One(..) => 1,
            Subs::Few(v) => v.len(),
            Subs::Many(m) => m.len(),
        }
    }

    fn position(v: &[(Arc<str>, Sub)], topic: &str) -> Option<usize> {
        v.iter().position(|(k, _)| names(k, topic))
    }

    pub(super) fn get_key_value(&self, topic: &str) -> Option<(&Arc<str>, &Sub)> {
        match self {
            Subs::One(k, sub) => names(k, topic).then_some((k, sub)),
            Subs::Few(v) => Self::position(v, topic).map(|i| (&v[i].0, &v[i].1)),
            Subs::Many(m) => m.get_key_value(topic),
        }
    }

    #[inline]
    pub(super) fn get_mut(&mut self, topic: &str) -> Option<&mut Sub> {
        match self {
            Subs::One(k, sub) => names(k, topic).then_some(sub),
            Subs::Few(v) => v
                .iter_mut()
                .find(|(k, _)| names(k, topic))
                .map(|e| &mut e.1),
            Subs::Many(m) => m.get_mut(topic),
        }
    }

    /// Adds or replaces the subscription to `topic`.
    pub(super) fn insert(&mut self, topic: Arc<str>, sub: Sub) {
        match self {
            Subs::One(k, old) if names(k, &topic) => *old = sub,
            Subs::One(..) => {
                let Subs::One(k, old) = std::mem::take(self) else {
                    unreachable!("matched")
                };
                *self = Subs::Few(vec![(k, old), (topic, sub)]);
            }
            Subs::Few(v) if v.is_empty() => *self = Subs::One(topic, sub),
            Subs::Few(v) => {
                if let Some(i) = Self::position(v, &topic) {
                    v[i].1 = sub;
                } else if v.len() < FEW {
                    v.reserve_exact(1);
                    v.push((topic, sub));
                } else {
                    let mut m: IdMap<Arc<str>, Sub> = v.drain(..).collect();
                    m.insert(topic, sub);
                    *self = Subs::Many(Box::new(m));
                }
            }
            Subs::Many(m) => {
                m.insert(topic, sub);
            }
        }
    }

    pub(super) fn remove_entry(&mut self, topic: &str) -> Option<(Arc<str>, Sub)> {
        let removed = match self {
            Subs::One(k, _) if names(k, topic) => {
                let Subs::One(k, sub) = std::mem::take(self) else {
                    unreachable!("matched")
                };
                return Some((k, sub));
            }
            Subs::One(..) => return None,
            Subs::Few(v) => {
                let i = Self::position(v, topic)?;
                let entry = v.swap_remove(i);
                if v.len() == 1 {
                    let (k, sub) = v.pop().expect("one left");
                    *self = Subs::One(k, sub);
                } else {
                    v.shrink_to_fit();
                }
                return Some(entry);
            }
            Subs::Many(m) => m.remove_entry(topic),
        };
        if self.len() <= FEW / 2 {
            let entries: Vec<_> = self.drain().collect();
            for (k, sub) in entries {
                self.insert(k, sub);
            }
        }
        removed
    }

    pub(super) fn remove(&mut self, topic: &str) -> Option<Sub> {
        self.remove_entry(topic).map(|(_, sub)| sub)
    }

    /// Empties the set, yielding its entries.
    pub(super) fn drain(&mut self) -> std::vec::IntoIter<(Arc<str>, Sub)> {
        let entries: Vec<_> = match std::mem::take(self) {
            Subs::One(k, sub) => vec![(k, sub)],
            Subs::Few(v) => v,
            Subs::Many(m) => m.into_iter().collect(),
        };
        let mut entries = entries;
        entries.shrink_to_fit();
        entries.into_iter()
    }

    /// Whether any topic waits for its owner's `Subscribed`.
    pub(super) fn any_pending(&self) -> bool {
        self.iter().any(|(_, sub)| sub.pending)
    }

    pub(super) fn iter(&self) -> Iter<'_> {
        match self {
            Subs::One(k, sub) => Iter::One(Some((k, sub))),
            Subs::Few(v) => Iter::Few(v.iter()),
            Subs::Many(m) => Iter::Many(m.iter()),
        }
    }

    pub(super) fn iter_mut(&mut self) -> IterMut<'_> {
        match self {
            Subs::One(k, sub) => IterMut::One(Some((&*k, sub))),
            Subs::Few(v) => IterMut::Few(v.iter_mut()),
            Subs::Many(m) => IterMut::Many(m.iter_mut()),
        }
    }

    pub(super) fn keys(&self) -> impl Iterator<Item = &Arc<str>> {
        self.iter().map(|(k, _)| k)
    }

    pub(super) fn into_keys(mut self) -> impl Iterator<Item = Arc<str>> {
        self.drain().map(|(k, _)| k)
    }
}

pub(super) enum Iter<'a> {
    One(Option<(&'a Arc<str>, &'a Sub)>),
    Few(std::slice::Iter<'a, (Arc<str>, Sub)>),
    Many(hash_map::Iter<'a, Arc<str>, Sub>),
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a Arc<str>, &'a Sub);
    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Iter::One(e) => e.take(),
            Iter::Few(i) => i.next().map(|(k, v)| (k, v)),
            Iter::Many(i) => i.next(),
        }
    }
}

pub(super) enum IterMut<'a> {
    One(Option<(&'a Arc<str>, &'a mut Sub)>),
    Few(std::slice::IterMut<'a, (Arc<str>, Sub)>),
    Many(hash_map::IterMut<'a, Arc<str>, Sub>),
}

impl<'a> Iterator for IterMut<'a> {
    type Item = (&'a Arc<str>, &'a mut Sub);
    fn next(&mut self) -> Option<Self::Item> {
        match self {
            IterMut::One(e) => e.take(),
            IterMut::Few(i) => i.next().map(|(k, v)| (&*k, v)),
            IterMut::Many(i) => i.next(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(last: u64) -> Sub {
        Sub {
            last,
            pending: false,
        }
    }

    #[test]
    fn one_topic_costs_one_entry_and_is_found_by_name_or_by_copy() {
        let mut s = Subs::default();
        let name: Arc<str> = Arc::from("room");
        s.insert(name.clone(), sub(3));
        assert!(matches!(s, Subs::One(..)), "one topic is inline");
        assert_eq!(s.get_mut(&name).map(|x| x.last), Some(3));
        assert_eq!(s.get_mut("room").map(|x| x.last), Some(3));
        assert!(s.get_mut("roo").is_none());
        assert!(s.get_mut("rooms").is_none());
        s.insert(Arc::from("room"), sub(5));
        assert_eq!(s.len(), 1);
        assert_eq!(s.get_key_value("room").map(|(_, x)| x.last), Some(5));
    }

    #[test]
    fn many_topics_become_a_map_and_back() {
        let mut s = Subs::default();
        for i in 0..20u64 {
            s.insert(Arc::from(format!("t{i}")), sub(i));
        }
        assert!(matches!(s, Subs::Many(_)));
        assert_eq!(s.len(), 20);
        for i in 0..20u64 {
            assert_eq!(s.get_mut(&format!("t{i}")).map(|x| x.last), Some(i));
        }
        for i in 0..17u64 {
            assert_eq!(s.remove(&format!("t{i}")).map(|x| x.last), Some(i));
        }
        assert!(matches!(s, Subs::Few(_)));
        s.insert(Arc::from("t18"), sub(18));
        assert_eq!(s.len(), 3, "replaced, not added");
        let mut left: Vec<u64> = s.iter().map(|(_, x)| x.last).collect();
        left.sort_unstable();
        assert_eq!(left, vec![17, 18, 19]);
        for (_, x) in s.iter_mut() {
            x.pending = true;
        }
        assert!(s.iter().all(|(_, x)| x.pending));
        let keys: Vec<Arc<str>> = s.into_keys().collect();
        assert_eq!(keys.len(), 3);
    }

    #[test]
    fn one_two_one_none() {
        let mut s = Subs::default();
        s.insert(Arc::from("a"), sub(1));
        s.insert(Arc::from("b"), sub(2));
        let Subs::Few(v) = &s else { panic!("few") };
        assert_eq!(v.len(), 2);
        assert_eq!(s.remove("a").map(|x| x.last), Some(1));
        assert!(matches!(&s, Subs::One(k, x) if &**k == "b" && x.last == 2));
        assert!(s.remove("a").is_none());
        assert_eq!(s.iter().count(), 1);
        for (_, x) in s.iter_mut() {
            x.last = 9;
        }
        assert_eq!(s.get_key_value("b").map(|(_, x)| x.last), Some(9));
        assert_eq!(s.remove("b").map(|x| x.last), Some(9));
        assert_eq!((s.len(), s.iter().count()), (0, 0));
        s.insert(Arc::from("c"), sub(3));
        assert_eq!(s.drain().count(), 1);
        assert_eq!(s.len(), 0);
    }

    #[test]
    fn removing_what_is_not_there_changes_nothing() {
        let mut s = Subs::default();
        s.insert(Arc::from("a"), sub(1));
        assert!(s.remove_entry("b").is_none());
        assert_eq!(s.len(), 1);
        assert_eq!(s.drain().count(), 1);
        assert_eq!(s.len(), 0);
    }
}
