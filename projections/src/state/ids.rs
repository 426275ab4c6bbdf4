//! Dense indexes for user ids: states keep per-user data in vectors indexed by a `u32`
//! handed out in order of first sight, so a million users cost a few bytes each.

use murmur_domain::UserId;
use rustc_hash::FxHashMap;

#[derive(Debug, Default, Clone)]
pub struct Ids {
    index: FxHashMap<UserId, u32>,
    ids: Vec<UserId>,
}

impl Ids {
    pub fn get(&self, id: UserId) -> Option<u32> {
        self.index.get(&id).copied()
    }

    /// The index of `id`, handing out the next one if it has none; `true` if it is new.
    pub fn intern(&mut self, id: UserId) -> (u32, bool) {
        if let Some(&i) = self.index.get(&id) {
            return (i, false);
        }
        // Far below 2^32 users: one machine's memory would run out long before.
        let i = self.ids.len() as u32;
        self.index.insert(id, i);
        self.ids.push(id);
        (i, true)
    }

    pub fn id(&self, index: u32) -> UserId {
        self.ids[index as usize]
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    pub fn reserve(&mut self, n: usize) {
        self.index.reserve(n);
        self.ids.reserve(n);
    }
}
