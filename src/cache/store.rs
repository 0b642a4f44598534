//! The bounded map of cached objects: at most `max_entries` entries and `max_bytes` body bytes,
//! the least recently used going first. In-flight fills are entries too, charged as their bytes
//! arrive, so the byte bound holds while objects are still filling.
//!
//! Every entry carries a generation: a fill that was evicted or replaced (a newer fill, a
//! restart) can no longer touch the entry that took its key.

use std::collections::{BTreeMap, HashMap};

use super::key::Key;

struct Entry<V> {
    value: V,
    gen: u64,
    /// Position in the LRU order (higher: used more recently).
    tick: u64,
    /// Body bytes charged to this entry.
    size: u64,
}

/// The store; `V` is what an entry holds (the cache keeps a fill or an object).
pub struct Store<V> {
    map: HashMap<Key, Entry<V>>,
    lru: BTreeMap<u64, Key>,
    tick: u64,
    gen: u64,
    bytes: u64,
    max_bytes: u64,
    max_entries: usize,
}

impl<V: Clone> Store<V> {
    pub fn new(max_bytes: u64, max_entries: usize) -> Self {
        Self {
            map: HashMap::new(),
            lru: BTreeMap::new(),
            tick: 0,
            gen: 0,
            bytes: 0,
            max_bytes,
            max_entries: max_entries.max(1),
        }
    }

    /// Body bytes held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Entries held (in-flight fills included).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Changes the bounds (a config reload), evicting down to them.
    pub fn set_limits(&mut self, max_bytes: u64, max_entries: usize) {
        self.max_bytes = max_bytes;
        self.max_entries = max_entries.max(1);
        self.evict(None);
    }

    /// The entry under `key` and its generation; marks it used.
    pub fn get(&mut self, key: &Key) -> Option<(V, u64)> {
        self.tick += 1;
        let tick = self.tick;
        let e = self.map.get_mut(key)?;
        // The LRU's copy of the key moves to its new place (no clone of the target).
        let k = self.lru.remove(&e.tick).unwrap_or_else(|| key.clone());
        e.tick = tick;
        self.lru.insert(tick, k);
        Some((e.value.clone(), e.gen))
    }

    /// Puts `value` under `key` (replacing any entry there), evicting the least recently used
    /// entries past `max_entries`. Returns the new entry's generation.
    pub fn insert(&mut self, key: Key, value: V) -> u64 {
        if let Some(old) = self.map.remove(&key) {
            self.lru.remove(&old.tick);
            self.bytes -= old.size;
        }
        self.tick += 1;
        self.gen += 1;
        self.lru.insert(self.tick, key.clone());
        self.map.insert(
            key.clone(),
            Entry {
                value,
                gen: self.gen,
                tick: self.tick,
                size: 0,
            },
        );
        self.evict(Some(&key));
        self.gen
    }

    /// Replaces the value of generation `gen` under `key`; `false` if that entry is gone.
    pub fn replace(&mut self, key: &Key, gen: u64, value: V) -> bool {
        match self.map.get_mut(key) {
            Some(e) if e.gen == gen => {
                e.value = value;
                true
            }
            _ => false,
        }
    }

    /// Charges `n` more bytes to entry `gen` under `key`, evicting others to stay within
    /// `max_bytes`. `false` when the entry is gone (evicted, replaced) or could not fit even
    /// alone: it is then no longer in the store, and its fill streams on uncached.
    pub fn grow(&mut self, key: &Key, gen: u64, n: u64) -> bool {
        match self.map.get_mut(key) {
            Some(e) if e.gen == gen => {
                e.size += n;
                self.bytes += n;
            }
            _ => return false,
        }
        self.evict(Some(key));
        if self.bytes > self.max_bytes {
            self.remove(key, gen);
            return false;
        }
        true
    }

    /// Removes entry `gen` under `key` (not a newer one that took the key).
    pub fn remove(&mut self, key: &Key, gen: u64) {
        if self.map.get(key).is_some_and(|e| e.gen == gen) {
            if let Some(e) = self.map.remove(key) {
                self.lru.remove(&e.tick);
                self.bytes -= e.size;
            }
        }
    }

    /// Removes every entry `drop` names (a stream restarted: its old epoch goes).
    pub fn retain(&mut self, mut keep: impl FnMut(&Key) -> bool) {
        let gone: Vec<(Key, u64)> = self
            .map
            .iter()
            .filter(|(k, _)| !keep(k))
            .map(|(k, e)| (k.clone(), e.gen))
            .collect();
        for (k, g) in gone {
            self.remove(&k, g);
        }
    }

    /// Evicts least recently used entries (never `keep`) until within both bounds.
    fn evict(&mut self, keep: Option<&Key>) {
        while self.map.len() > self.max_entries || self.bytes > self.max_bytes {
            let victim = self.lru.values().find(|k| Some(*k) != keep).cloned();
            let Some(k) = victim else { return };
            if let Some(e) = self.map.remove(&k) {
                self.lru.remove(&e.tick);
                self.bytes -= e.size;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u32) -> Key {
        Key::new("r", 0, format!("/k{n}"), None)
    }

    #[test]
    fn bounded_in_entries_and_bytes_lru_first() {
        let mut s: Store<u32> = Store::new(100, 3);
        let g: Vec<u64> = (0..3).map(|i| s.insert(key(i), i)).collect();
        assert_eq!(s.len(), 3);
        // k0 is used: k1 is now the least recently used and goes first.
        assert!(s.get(&key(0)).is_some());
        s.insert(key(3), 3);
        assert_eq!(s.len(), 3);
        assert!(s.get(&key(1)).is_none());
        // Bytes: growing k3 past the bound evicts the others, never k3 itself.
        assert!(s.grow(&key(0), g[0], 40));
        assert!(s.grow(&key(2), g[2], 40));
        let g3 = s.get(&key(3)).expect("k3").1;
        assert!(s.grow(&key(3), g3, 50));
        assert!(s.bytes() <= 100, "{}", s.bytes());
        assert!(s.get(&key(3)).is_some());
        // An object larger than the whole store is dropped, not kept over the bound.
        assert!(!s.grow(&key(3), g3, 200));
        assert!(s.get(&key(3)).is_none());
        assert_eq!(s.bytes(), 0);
    }

    #[test]
    fn an_old_generation_cannot_touch_a_newer_entry() {
        let mut s: Store<u32> = Store::new(100, 10);
        let old = s.insert(key(1), 1);
        let new = s.insert(key(1), 2);
        assert!(!s.replace(&key(1), old, 9));
        assert!(!s.grow(&key(1), old, 5));
        s.remove(&key(1), old);
        assert_eq!(s.get(&key(1)), Some((2, new)));
        s.set_limits(100, 1);
        s.insert(key(2), 3);
        assert_eq!(s.len(), 1);
    }
}
