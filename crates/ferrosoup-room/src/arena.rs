//! Typed slab keys: a transport, producer or consumer key cannot be used to index the
//! wrong table, which plain `usize` keys allowed.

use std::marker::PhantomData;

use slab::Slab;

macro_rules! slab_key {
    ($(#[$doc:meta] $name:ident),* $(,)?) => {$(
        #[$doc]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(usize);

        impl From<usize> for $name {
            fn from(k: usize) -> Self {
                Self(k)
            }
        }

        impl From<$name> for usize {
            fn from(k: $name) -> usize {
                k.0
            }
        }
    )*};
}

slab_key!(
    /// Where a worker keeps a transport.
    TransportKey,
    /// Where a worker keeps a producer.
    ProducerKey,
    /// Where a worker keeps a consumer.
    ConsumerKey,
    /// Where a worker keeps a data producer.
    DataProducerKey,
    /// Where a worker keeps a data consumer.
    DataConsumerKey,
);

/// Capacity below which an [`Arena`] is not shrunk.
const MIN_SHRINK_CAPACITY: usize = 16;

/// A slab whose keys are of type `K`.
pub struct Arena<K, T> {
    slab: Slab<T>,
    key: PhantomData<K>,
}

impl<K, T> Default for Arena<K, T> {
    fn default() -> Self {
        Self {
            slab: Slab::new(),
            key: PhantomData,
        }
    }
}

impl<K: From<usize> + Into<usize> + Copy, T> Arena<K, T> {
    /// Stores `value` and returns its key.
    pub fn insert(&mut self, value: T) -> K {
        K::from(self.slab.insert(value))
    }

    /// Removes and returns the value at `key`, if any. Once the table holds less than half
    /// of what it has room for, the room above its highest key is given back, but a
    /// quarter of what it holds (a slot is a whole object, up to a few KiB): a burst of
    /// peers does not keep the table at its peak size after they left, and one peer coming
    /// and going at the edge does not reallocate it each time.
    pub fn remove(&mut self, key: K) -> Option<T> {
        let value = self.slab.try_remove(key.into())?;
        let capacity = self.slab.capacity();
        if capacity > MIN_SHRINK_CAPACITY && self.slab.len() * 2 <= capacity {
            // Cheap when nothing can go (the highest key is taken): it only rebuilds its
            // free list when it dropped vacant slots.
            self.slab.shrink_to_fit();
            if self.slab.capacity() < capacity {
                self.slab.reserve_exact(self.slab.len() / 4);
            }
        }
        Some(value)
    }

    /// Slots the table has room for without growing.
    #[cfg(test)]
    pub fn capacity(&self) -> usize {
        self.slab.capacity()
    }

    /// The value at `key`.
    pub fn get(&self, key: K) -> Option<&T> {
        self.slab.get(key.into())
    }

    /// The value at `key`, mutably.
    pub fn get_mut(&mut self, key: K) -> Option<&mut T> {
        self.slab.get_mut(key.into())
    }

    /// Number of values stored.
    pub fn len(&self) -> usize {
        self.slab.len()
    }

    /// True when nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.slab.is_empty()
    }
}

impl<K: Into<usize>, T> std::ops::Index<K> for Arena<K, T> {
    type Output = T;

    fn index(&self, key: K) -> &T {
        &self.slab[key.into()]
    }
}

impl<K: Into<usize>, T> std::ops::IndexMut<K> for Arena<K, T> {
    fn index_mut(&mut self, key: K) -> &mut T {
        &mut self.slab[key.into()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_does_not_keep_its_room_after_it_left() {
        let mut arena: Arena<TransportKey, [u8; 256]> = Arena::default();
        let steady: Vec<TransportKey> = (0..8).map(|_| arena.insert([1; 256])).collect();
        let burst: Vec<TransportKey> = (0..500).map(|_| arena.insert([2; 256])).collect();
        assert!(arena.capacity() >= 508);
        for k in burst
            .iter()
            .rev()
            .step_by(2)
            .chain(burst.iter().rev().skip(1).step_by(2))
        {
            assert_eq!(arena.remove(*k), Some([2; 256]));
        }
        assert_eq!(arena.len(), 8);
        assert!(
            arena.capacity() <= MIN_SHRINK_CAPACITY,
            "capacity {}",
            arena.capacity()
        );
        // The steady keys still lead to their values, and new ones go in.
        for k in &steady {
            assert_eq!(arena.get(*k), Some(&[1; 256]));
        }
        let k = arena.insert([3; 256]);
        assert_eq!(arena[k], [3; 256]);
        assert_eq!(arena.remove(k), Some([3; 256]));
        assert_eq!(arena.remove(k), None);
        // Half full is small enough: a table grown to 64 for 32 is cut back to about 32.
        let mut arena: Arena<ProducerKey, u64> = Arena::default();
        let keys: Vec<ProducerKey> = (0..64).map(|i| arena.insert(i)).collect();
        for k in &keys[32..] {
            arena.remove(*k);
        }
        assert!(
            (32..=40).contains(&arena.capacity()),
            "capacity {}",
            arena.capacity()
        );
    }

    #[test]
    fn a_high_key_still_taken_keeps_the_table_whole() {
        let mut arena: Arena<ConsumerKey, u64> = Arena::default();
        let keys: Vec<ConsumerKey> = (0..100).map(|i| arena.insert(i)).collect();
        for k in &keys[..99] {
            arena.remove(*k);
        }
        // Key 99 is still there: nothing below it can go, and it is still found.
        assert_eq!(arena.get(keys[99]), Some(&99));
        assert_eq!(arena.len(), 1);
        assert_eq!(arena.remove(keys[99]), Some(99));
        assert!(
            arena.capacity() <= MIN_SHRINK_CAPACITY,
            "capacity {}",
            arena.capacity()
        );
    }
}
