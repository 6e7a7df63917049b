//! A session's subscriptions: topic name → [`Sub`].
//!
//! Most sessions hold one topic or a few, and a fan-out looks the topic up
//! in every subscriber's set for every message. A hash map costs a table of
//! at least four buckets (~150 bytes on the heap for one topic) and a hash
//! of the name per lookup; a short vector costs one entry (32 bytes) and a
//! pointer comparison, since the hub shares one copy of each name per core.
//! Past [`FEW`] topics the set becomes a hash map, so a session with
//! thousands of topics still finds one in constant time.

use std::collections::hash_map;
use std::sync::Arc;

use super::Sub;
use crate::sys::hash::IdMap;

/// The most topics kept in the vector form.
const FEW: usize = 8;

/// See the module documentation.
#[derive(Debug)]
pub(super) enum Subs {
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
            Subs::Few(v) => v.len(),
            Subs::Many(m) => m.len(),
        }
    }

    fn position(v: &[(Arc<str>, Sub)], topic: &str) -> Option<usize> {
        v.iter().position(|(k, _)| names(k, topic))
    }

    pub(super) fn get_key_value(&self, topic: &str) -> Option<(&Arc<str>, &Sub)> {
        match self {
            Subs::Few(v) => Self::position(v, topic).map(|i| (&v[i].0, &v[i].1)),
            Subs::Many(m) => m.get_key_value(topic),
        }
    }

    #[inline]
    pub(super) fn get_mut(&mut self, topic: &str) -> Option<&mut Sub> {
        match self {
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
            Subs::Few(v) => {
                let i = Self::position(v, topic)?;
                let entry = v.swap_remove(i);
                v.shrink_to_fit();
                return Some(entry);
            }
            Subs::Many(m) => m.remove_entry(topic),
        };
        if self.len() <= FEW / 2 {
            *self = Subs::Few(self.drain().collect());
        }
        removed
    }

    pub(super) fn remove(&mut self, topic: &str) -> Option<Sub> {
        self.remove_entry(topic).map(|(_, sub)| sub)
    }

    /// Empties the set, yielding its entries.
    pub(super) fn drain(&mut self) -> std::vec::IntoIter<(Arc<str>, Sub)> {
        let entries: Vec<_> = match std::mem::take(self) {
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
            Subs::Few(v) => Iter::Few(v.iter()),
            Subs::Many(m) => Iter::Many(m.iter()),
        }
    }

    pub(super) fn iter_mut(&mut self) -> IterMut<'_> {
        match self {
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
    Few(std::slice::Iter<'a, (Arc<str>, Sub)>),
    Many(hash_map::Iter<'a, Arc<str>, Sub>),
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a Arc<str>, &'a Sub);
    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Iter::Few(i) => i.next().map(|(k, v)| (k, v)),
            Iter::Many(i) => i.next(),
        }
    }
}

pub(super) enum IterMut<'a> {
    Few(std::slice::IterMut<'a, (Arc<str>, Sub)>),
    Many(hash_map::IterMut<'a, Arc<str>, Sub>),
}

impl<'a> Iterator for IterMut<'a> {
    type Item = (&'a Arc<str>, &'a mut Sub);
    fn next(&mut self) -> Option<Self::Item> {
        match self {
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
        let Subs::Few(v) = &s else { panic!("few") };
        assert_eq!(v.capacity(), 1);
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
    fn removing_what_is_not_there_changes_nothing() {
        let mut s = Subs::default();
        s.insert(Arc::from("a"), sub(1));
        assert!(s.remove_entry("b").is_none());
        assert_eq!(s.len(), 1);
        assert_eq!(s.drain().count(), 1);
        assert_eq!(s.len(), 0);
    }
}
