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
);

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

    /// Removes and returns the value at `key`, if any.
    pub fn remove(&mut self, key: K) -> Option<T> {
        self.slab.try_remove(key.into())
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
